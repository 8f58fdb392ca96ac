#!/usr/bin/env python3
"""state_compaction.py: how long compacting the state file stops meteord's loop.

Writes a state file holding CHANNELS x EVENTS cached events (100-byte texts) three times
over (older ids first, so replay keeps the newest EVENTS per channel and the file is three
times what the cache holds), starts the release meteord on it, which compacts at its first
loop turn, and prints the replay time, the compaction line of the log and the longest loop
pause the server measured for the state file (state_longest_pause_micros in /stats).
Then it publishes while timing each reply, to show the loop is not held afterwards.

Usage: tools/state_compaction.py [CHANNELS [EVENTS]]   (defaults 10000 250)
Needs target/release/meteord (cargo build --release). The files go to target/compaction/.
"""
import os
import re
import socket
import struct
import subprocess
import sys
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNELS = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
EVENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 250
PASSES = 3
OUT = os.path.join(ROOT, "target", "compaction")
STATE = os.path.join(OUT, "meteord.state")
METEORD = os.path.join(ROOT, "target", "release", "meteord")


def record(payload):
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def event(id_, ms, channel, text):
    return record(struct.pack("<BQQI", 1, id_, ms, len(channel)) + channel + text)


def write_state():
    os.makedirs(OUT, exist_ok=True)
    now = int(time.time() * 1000)
    text = b"t" * 100
    next_id = 1
    with open(STATE, "wb") as f:
        f.write(b"METEORD-STATE 1\n")
        for _ in range(PASSES):
            chunk = []
            for e in range(EVENTS):
                for c in range(CHANNELS):
                    chunk.append(event(next_id, now, b"ch%d" % c, text))
                    next_id += 1
                if len(chunk) > 100000:
                    f.write(b"".join(chunk))
                    chunk = []
            f.write(b"".join(chunk))
        f.write(record(struct.pack("<BQ", 2, next_id + 100000)))
    return os.path.getsize(STATE)


def http_get(addr, path):
    with socket.create_connection(addr, timeout=30) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                return data.decode()
            data += part


def main():
    size = write_state()
    print("state file: %d channels x %d events x %d passes = %d bytes" % (CHANNELS, EVENTS, PASSES, size))
    proc = subprocess.Popen(
        [METEORD, "-ConfigFileLocation", "/dev/null", "-SyslogFacility", "none",
         "-SubscriberIP", "127.0.0.1", "-SubscriberPort", "0", "-ControllerPort", "0",
         "-MaxCachedBytes", "0", "-MaxChannels", "0", "-MaxMessagesPerChannel", str(EVENTS),
         "-MaxMessageAge", "0", "-StateFile", STATE, "-StateSync", "everysec"],
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, text=True)
    ctl = None
    try:
        started = time.time()
        for line in proc.stderr:
            line = line.rstrip()
            if "restored" in line or "compacted" in line:
                print(line, flush=True)
            m = re.search(r"listening for controllers on (\S+)", line)
            if m:
                host, port = m.group(1).rsplit(":", 1)
                ctl = (host, int(port))
            if "compacted" in line:
                break
        print("start to end of compaction: %.1f s" % (time.time() - started))
        stats = http_get(ctl, "/stats")
        for key in ("state_longest_pause_micros", "state_file_bytes", "events_cached", "state_compactions"):
            m = re.search(r'"%s":(\d+)' % key, stats)
            print("%s: %s" % (key, m.group(1) if m else "?"))
        worst = 0.0
        with socket.create_connection(ctl, timeout=30) as s:
            f = s.makefile("rb")
            for i in range(2000):
                t = time.time()
                s.sendall(b"ADDMESSAGE ch%d after\n" % (i % CHANNELS))
                f.readline()
                worst = max(worst, time.time() - t)
        print("2000 publishes after compaction: slowest reply %.1f ms" % (worst * 1000))
    finally:
        proc.terminate()
        proc.wait(timeout=120)


if __name__ == "__main__":
    main()
