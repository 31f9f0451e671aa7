#!/bin/bash
# Container health check for sondakika: `GET /healthz` on the local listener, using only bash
# (the slim image has neither curl nor wget). Exit 0 when the answer is 200, 1 otherwise.
# The port comes from SONDAKIKA_BIND (default 8080); the address is always loopback.
set -u
bind="${SONDAKIKA_BIND:-127.0.0.1:8080}"
port="${bind##*:}"
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3 || exit 1
IFS= read -r -t 4 status <&3 || exit 1
case "$status" in
    "HTTP/1."?" 200 "*) exit 0 ;;
    *) echo "unhealthy: ${status%$'\r'}" >&2; exit 1 ;;
esac
