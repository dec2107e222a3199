//! [`SlimVec`]: a vector kept at its exact length in one boxed slice, for the short lists a
//! held call keeps (its legs, its dialogues, a dialogue's media lines): 16 bytes inline, not
//! a `Vec`'s 24, and no spare capacity (memory per held call, issue 19). Growing it moves
//! the list to a new allocation, which suits lists changed only by signalling.

use std::ops::{Deref, DerefMut};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlimVec<T>(Box<[T]>);

impl<T> Default for SlimVec<T> {
    fn default() -> Self {
        SlimVec(Box::default())
    }
}

impl<T> SlimVec<T> {
    pub fn new() -> Self {
        SlimVec::default()
    }

    /// Changes the list as a `Vec`, then keeps it at its new exact length.
    fn edit<R>(&mut self, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
        let mut v = std::mem::take(&mut self.0).into_vec();
        let r = f(&mut v);
        self.0 = v.into_boxed_slice();
        r
    }

    pub fn push(&mut self, item: T) {
        self.edit(|v| {
            v.reserve_exact(1);
            v.push(item);
        });
    }

    /// Removes and returns the item at `index`. Panics when out of bounds, as `Vec::remove`.
    pub fn remove(&mut self, index: usize) -> T {
        self.edit(|v| v.remove(index))
    }

    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.edit(|v| v.retain(keep));
    }
}

impl<T> From<Vec<T>> for SlimVec<T> {
    fn from(v: Vec<T>) -> Self {
        SlimVec(v.into_boxed_slice())
    }
}

impl<T> FromIterator<T> for SlimVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        SlimVec(iter.into_iter().collect())
    }
}

impl<T> Deref for SlimVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> DerefMut for SlimVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T> IntoIterator for SlimVec<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

impl<'a, T> IntoIterator for &'a SlimVec<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut SlimVec<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::SlimVec;

    #[test]
    fn edits_keep_the_exact_length() {
        let mut v: SlimVec<u32> = SlimVec::new();
        assert!(v.is_empty());
        for i in 0..5 {
            v.push(i);
        }
        assert_eq!(&*v, &[0, 1, 2, 3, 4]);
        assert_eq!(v.remove(1), 1);
        v.retain(|&x| x != 3);
        assert_eq!(&*v, &[0, 2, 4]);
        for x in &mut v {
            *x += 1;
        }
        assert_eq!(v.iter().sum::<u32>(), 9);
        assert_eq!(std::mem::size_of::<SlimVec<u64>>(), 16);
    }
}
