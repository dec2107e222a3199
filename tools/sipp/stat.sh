# Sourced by the SIPp benchmarks (tools/sip-cps.sh, tools/relayset-bench.sh).
# sipp_stat CSV COLUMN: COLUMN's value in the last row of a SIPp -trace_stat file (e.g.
# SuccessfulCall(C), FailedCall(C)); DEFAULT ($3, "?" if not given) when the file or the
# column is missing.
sipp_stat() {
  local v
  v=$(awk -F';' -v c="$2" 'NR==1{for(i=1;i<=NF;i++)if($i==c)k=i} END{if(k)print $k}' "$1" 2>/dev/null)
  echo "${v:-${3:-?}}"
}
