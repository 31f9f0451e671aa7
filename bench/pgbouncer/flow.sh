#!/usr/bin/env bash
# The flow of BENCHMARKS.md's "PgBouncer" entry: two `sondakika serve` processes through a
# pooler, a token, an SSE ticker on each, one alert flagged three times with one Idempotency-Key,
# six more, a correction, SIGTERM; then what arrived and what the logs complained about.
#   bench/pgbouncer/flow.sh POOLED_URL [DIRECT_URL] [NAME]
# Logs and SSE captures go to ${OUT:-/tmp}/NAME.*. Needs `cargo build` first.
set -u
BIN="$(dirname "$0")/../../target/debug/sondakika"
export DATABASE_URL="$1"
[ -n "${2:-}" ] && export SONDAKIKA_DATABASE_DIRECT_URL="$2"
export SONDAKIKA_LOG_FORMAT=json SONDAKIKA_LOG_LEVEL=info SONDAKIKA_BIND=127.0.0.1:0
export SONDAKIKA_VAPID_SUBJECT=mailto:teknik@burdurweb.com
out=${OUT:-/tmp}/${3:-pgbouncer-flow}
rm -f $out.*
$BIN serve 2> $out.serve1.log &
P1=$!
sleep 4
$BIN serve 2> $out.serve2.log &
P2=$!
sleep 4
A1=$(grep -o '"addr":"[^"]*"' $out.serve1.log | head -1 | cut -d'"' -f4)
A2=$(grep -o '"addr":"[^"]*"' $out.serve2.log | head -1 | cut -d'"' -f4)
echo "serve1 at $A1, serve2 at $A2"
TOKEN=$($BIN token create --name "Deneme" --role editor 2>$out.token.err | tail -1)
echo "token: ${TOKEN:0:6}… ($(tail -1 $out.token.err))"
curl -sN http://$A1/sse > $out.sse1 &
C1=$!
curl -sN http://$A2/sse > $out.sse2 &
C2=$!
sleep 1
for A in $A1 $A2 $A1; do
  curl -s -o /dev/null -w "flag on $A with the same Idempotency-Key: %{http_code}\n" -X POST http://$A/api/v1/alerts \
    -H "authorization: Bearer $TOKEN" -H 'idempotency-key: k1' -H 'content-type: application/json' \
    -d '{"headline":"Sis: seferler iptal","url":"https://www.example.com.tr/haber/sis"}'
done
for i in 1 2 3 4 5 6; do
  curl -s -o /dev/null -w "flag $i on $A2: %{http_code}\n" -X POST http://$A2/api/v1/alerts \
    -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"headline\":\"Haber $i\",\"url\":\"https://www.example.com.tr/haber/$i\"}"
done
ID=$(curl -s http://$A1/api/v1/alerts -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys; print([a["id"] for a in json.load(sys.stdin)["items"] if a["headline"].startswith("Sis")][0])')
curl -s -o /dev/null -w "correct on $A2: %{http_code}\n" -X PATCH http://$A2/api/v1/alerts/$ID \
  -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"headline":"Sis: seferler yeniden başladı"}'
sleep 3
echo "SSE on serve1: $(grep -c '^event: alert' $out.sse1) alert events, $(grep -c '^event: update\|^event: correction' $out.sse1) updates"
echo "SSE on serve2: $(grep -c '^event: alert' $out.sse2) alert events, $(grep -c '^event: update\|^event: correction' $out.sse2) updates"
kill $C1 $C2
kill -TERM $P1 $P2; wait $P1; echo "serve1 exit $?"; wait $P2; echo "serve2 exit $?"
echo "errors/warnings in the logs:"
cat $out.serve1.log $out.serve2.log | python3 -c '
import json,sys,collections
c=collections.Counter()
for l in sys.stdin:
    try: v=json.loads(l)
    except Exception: c[l.strip()[:160]]+=1; continue
    if v.get("level") in ("WARN","ERROR"): c[(v.get("message","")+" | "+str(v.get("error",""))[:150])]+=1
for k,n in c.most_common(12): print(n, k)'
