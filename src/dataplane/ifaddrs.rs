//! The addresses configured on this host's network devices (`getifaddrs`): which device has
//! an address (the in-kernel path attaches there) and the prefix configured with it (the
//! SIP proxy's subnet of an interface, `sip::networks`).

use std::net::IpAddr;

/// One configured address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    /// The network device's name.
    pub device: String,
    /// The prefix length of its netmask (`None`: no netmask reported).
    pub prefix_len: Option<u8>,
}

/// The address a `sockaddr` holds, if it is IPv4 or IPv6.
///
/// # Safety
/// `sa` is null or points to a sockaddr of the family it names (AF_INET: a `sockaddr_in`,
/// AF_INET6: a `sockaddr_in6`), alive for the call.
unsafe fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null and live (the caller's promise).
    let family = i32::from(unsafe { (*sa).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: an AF_INET address is a sockaddr_in (the caller's promise).
            let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
            Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 address is a sockaddr_in6 (the caller's promise).
            let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

/// The number of leading one bits of a netmask.
fn prefix_of(mask: IpAddr) -> u8 {
    let ones = match mask {
        IpAddr::V4(m) => u32::from(m).leading_ones(),
        IpAddr::V6(m) => u128::from(m).leading_ones(),
    };
    u8::try_from(ones).unwrap_or(0)
}

/// The device that has `ip`, and the prefix configured with it.
pub fn find(ip: IpAddr) -> Option<IfAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head to a live pointer; the list is freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr and ifa_netmask are null or sockaddrs of the family they name,
        // owned by the list.
        let (addr, mask) = unsafe { (ip_of(ifa.ifa_addr), ip_of(ifa.ifa_netmask)) };
        if addr == Some(ip) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            found = Some(IfAddr {
                device: name.to_string_lossy().into_owned(),
                prefix_len: mask.map(prefix_of),
            });
            break;
        }
    }
    // SAFETY: frees the list getifaddrs returned, once; no reference into it outlives this.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_with_its_prefix() {
        let lo = find("127.0.0.1".parse().unwrap()).expect("127.0.0.1 is configured");
        assert_eq!(lo.prefix_len, Some(8));
        assert!(find("192.0.2.254".parse().unwrap()).is_none());
        assert_eq!(prefix_of("255.255.255.0".parse().unwrap()), 24);
        assert_eq!(prefix_of("ffff:ffff::".parse().unwrap()), 32);
    }
}
