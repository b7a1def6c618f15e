"""Child process for the crash test: commits `committed` episodes, starts another, then SIGKILLs itself.

Usage: killed_writer.py STORE COMMITTED FRAMES_BEFORE_KILL FLUSH_EVERY
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import make_frame

from coirl_ros.data import EpisodeStore

store = EpisodeStore.open(sys.argv[1])
committed, frames_before_kill, flush_every = (int(a) for a in sys.argv[2:5])
writer = store.writer(flush_every=flush_every)
for _ in range(committed):
    index = writer.begin_episode("lift", "teleop")
    for t in range(20):
        writer.add_frame(make_frame(store.spec, index, t))
    writer.save_episode(success=True)
index = writer.begin_episode("lift", "teleop")
for t in range(frames_before_kill):
    writer.add_frame(make_frame(store.spec, index, t))
    if t + 1 == frames_before_kill - frames_before_kill % flush_every:
        writer.flush()  # whole blocks reach disk; the remainder is still in memory at the kill
print("KILLING", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
