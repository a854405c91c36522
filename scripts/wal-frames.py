#!/usr/bin/env python3
"""Which b-trees a SQLite workload writes: the frames of each commit in the
WAL, counted by the table or index their page belongs to.

Every page a commit changes is written to the WAL whole (4 KiB), so frames
per commit is what a write costs in I/O: an index that appends at its end
costs one frame per commit however many rows the commit carries, one whose
keys are scattered (a hash, or a registration among many live ones) costs
about one frame per row. Used to find where the refresh rotation's writes
went (issue 18: half were `audit_events_registration`).

    # the load matrix does it for every SQLite run it measures:
    WAL_DIR=/tmp/wal SCENARIOS="anonc refresh" BACKENDS=sqlite scripts/load-matrix.sh BIN

    # or by hand: run a load, then stop the server without a checkpoint and copy:
    kill -9 "$server"; mkdir snap && cp authmd.db authmd.db-wal snap/
    scripts/wal-frames.py snap

Counts the commits since the WAL last restarted (a checkpoint that copied
everything starts it over, so take the copy before the next one: the
server checkpoints every 4,000 frames). Pages are attributed to b-trees as
they are at the end (`dbstat` on a copy that includes the WAL); a page
that moved between b-trees meanwhile, through the freelist, is counted
under its last owner.
"""
import collections
import os
import shutil
import sqlite3
import struct
import sys
import tempfile

if len(sys.argv) != 2:
    sys.exit(__doc__)
snap = sys.argv[1]
wal = open(os.path.join(snap, "authmd.db-wal"), "rb").read()
if len(wal) < 32 or struct.unpack(">I", wal[:4])[0] not in (0x377F0682, 0x377F0683):
    sys.exit("not a WAL file")
page_size, salt = struct.unpack(">I", wal[8:12])[0], wal[16:24]
commits, pending, offset = [], [], 32
while offset + 24 + page_size <= len(wal):
    page, size_after = struct.unpack(">II", wal[offset:offset + 8])
    if wal[offset + 8:offset + 16] != salt:  # an older generation's frames
        break
    pending.append(page)
    if size_after:  # the commit's last frame
        commits.append(pending)
        pending = []
    offset += 24 + page_size
if not commits:
    sys.exit("no committed frames in this WAL generation")

with tempfile.TemporaryDirectory() as tmp:
    db = os.path.join(tmp, "authmd.db")
    shutil.copy(os.path.join(snap, "authmd.db"), db)
    shutil.copy(os.path.join(snap, "authmd.db-wal"), db + "-wal")
    with sqlite3.connect(db) as c:
        owner = dict((p, n) for n, p in c.execute("SELECT name, pageno FROM dbstat"))

per_tree = collections.Counter(owner.get(p, "(free or other)") for cm in commits for p in cm)
frames = sum(len(cm) for cm in commits)
print(f"{len(commits)} commits, {frames} frames, {frames / len(commits):.1f} frames per commit")
print(f"{'per commit':>10}  b-tree")
for name, n in per_tree.most_common():
    print(f"{n / len(commits):10.2f}  {name}")
