#!/usr/bin/env python3
"""Runs the memory attacks of the security report against a meteord binary
and prints what /stats reports and the process's RSS (VmRSS) for each.

    python3 tools/memory_attacks.py target/release/meteord [extra options]

Each attack gets a fresh server on loopback ports chosen by the system;
extra options (e.g. -MaxCachedBytes 0) go to every server. Only the
standard library is used; Linux only (/proc/<pid>/status).
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

SIX_MODES = "".join(
    f"[m{i}]\nPersist 1\nHeaderTemplate HDR\\n\nMessageTemplate {t}\n\n"
    for i, t in enumerate(
        ["~text~", "~text:js~", "~text:json~", "~text:html~", "~text:sse~", "J~text:json~"]
    )
)


class Server:
    def __init__(self, binary, conf, extra):
        self.dir = tempfile.TemporaryDirectory()
        path = os.path.join(self.dir.name, "meteord.conf")
        with open(path, "w") as f:
            f.write(conf)
        args = [binary, "-ConfigFileLocation", path, "-SubscriberIP", "127.0.0.1",
                "-SubscriberPort", "0", "-ControllerPort", "0", "-SyslogFacility", "none",
                "-MaxControllerLineBytes", "2097152"] + extra
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     cwd=self.dir.name, text=True)
        self.sub = self.ctl = None
        deadline = time.time() + 10
        while (self.sub is None or self.ctl is None) and time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            for marker, attr in (("listening for subscribers on ", "sub"),
                                 ("listening for controllers on ", "ctl")):
                m = re.search(re.escape(marker) + r"(\S+)", line)
                if m:
                    host, port = m.group(1).rsplit(":", 1)
                    setattr(self, attr, (host, int(port)))
        if self.sub is None or self.ctl is None:
            raise SystemExit(f"{binary} did not start")
        self.control = socket.create_connection(self.ctl)
        self.replies = self.control.makefile("rb")

    def publish(self, channel, text, count=1, batch=10):
        line = b"ADDMESSAGE " + channel.encode() + b" " + text + b"\n"
        while count > 0:
            k = min(batch, count)
            self.control.sendall(line * k)
            for _ in range(k):
                reply = self.replies.readline()
                if not reply.startswith(b"OK"):
                    raise SystemExit(f"ADDMESSAGE {channel}: {reply!r}")
            count -= k

    def publish_many(self, lines, batch=1000):
        for i in range(0, len(lines), batch):
            chunk = lines[i:i + batch]
            self.control.sendall(b"".join(chunk))
            for _ in chunk:
                self.replies.readline()

    def stats(self):
        with socket.create_connection(self.ctl) as s:
            s.sendall(b"GET /stats HTTP/1.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data.split(b"\r\n\r\n", 1)[1])

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def report(self, what):
        st = self.stats()
        print(f"  {what:<44} bytes_cached {st['bytes_cached'] / 2**20:8.2f} MiB  "
              f"channels {st['channel_count']:>6}  RSS {self.rss_mib():7.1f} MiB", flush=True)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()


def six_modes(binary, extra):
    s = Server(binary, SIX_MODES, extra)
    s.publish("ch", b"<" * 60_000, count=262, batch=20)
    s.report("15 MiB of '<' in one channel")
    for i in range(6):
        c = socket.create_connection(s.sub)
        c.sendall(f"GET /push/h{i}/m{i}/ch.h HTTP/1.1\r\n\r\n".encode())
        c.recv(4)
        c.close()
    time.sleep(0.5)
    s.report("six readers, one per mode, closed at once")
    time.sleep(4)
    s.report("4.5 s later")
    s.stop()


def many_channels(binary, extra):
    s = Server(binary, "", extra)
    s.publish_many([f"ADDMESSAGE c{i} x\n".encode() for i in range(200_000)])
    s.report("200,000 one-event channels")
    s.stop()


def large_events(binary, extra):
    s = Server(binary, "", extra)
    for i in range(5):
        s.publish(f"big{i}", b"x" * (1 << 20), count=250)
    s.report("5 channels x 250 events of 1 MiB")
    s.stop()


def trimmed(binary, extra, reader=False):
    s = Server(binary, SIX_MODES, extra)
    s.report("started")
    if reader:
        c = socket.create_connection(s.sub)
        c.sendall(b"GET /push/h/m0/big HTTP/1.1\r\n\r\n")
        threading.Thread(target=lambda: [None for _ in iter(lambda: c.recv(1 << 20), b"")],
                         daemon=True).start()
        time.sleep(0.2)
    s.publish("big", b"x" * (1 << 20), count=250)
    s.report("250 events of 1 MiB")
    s.publish("big", b"small", count=300, batch=100)
    time.sleep(3)
    s.report("300 small ones later (+3 s)")
    s.stop()


def trimmed_with_a_reader(binary, extra):
    trimmed(binary, extra, reader=True)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    binary, extra = os.path.abspath(sys.argv[1]), sys.argv[2:]
    only = os.environ.get("ATTACKS", "").split()
    attacks = (six_modes, many_channels, large_events, trimmed, trimmed_with_a_reader)
    for attack in (a for a in attacks if not only or a.__name__ in only):
        print(attack.__name__, flush=True)
        attack(binary, extra)


if __name__ == "__main__":
    main()
