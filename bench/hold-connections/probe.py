# Holds N connections from 127.0.0.2 (half idle, half half-sent), then measures /healthz from
# 127.0.0.1 and the server's RSS. Usage: probe.py PORT PID N
import socket, sys, time, statistics, os
port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])

def healthz_ms(k=200):
    out = []
    for _ in range(k):
        t = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:40]
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1]

base_rss = rss_kib(pid)
p50, p99 = healthz_ms()
print(f"before: rss {base_rss} KiB, /healthz p50 {p50:.2f} ms p99 {p99:.2f} ms")
socks = []
t = time.perf_counter()
for i in range(n):
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", port))
    if i % 2:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    socks.append(s)
print(f"opened {n} connections from 127.0.0.2 in {time.perf_counter() - t:.2f} s")
time.sleep(1)
refused = held = 0
for s in socks:
    s.settimeout(0.01)
    try:
        d = s.recv(4096)
        if d.startswith(b"HTTP/1.1 429"):
            refused += 1
        else:
            held += 1
    except socket.timeout:
        held += 1
    except ConnectionResetError:
        refused += 1
rss = rss_kib(pid)
p50, p99 = healthz_ms()
fds = len(os.listdir(f"/proc/{pid}/fd"))
print(f"with them: held {held}, refused 429 {refused}; server fds {fds}, rss {rss} KiB "
      f"(+{rss - base_rss} KiB); /healthz p50 {p50:.2f} ms p99 {p99:.2f} ms")
