"""OpenMP's wait policy, set before torch loads its OpenMP runtime (`fsgen` imports this first).

OpenMP threads that spin while they wait for work take the cores of everything else on a busy
machine. Measured with benchmarks/bench_threads.py (an oracle run on two tiny models, best of 3,
on this project's shared 2-core machine): 1 thread 0.42 s; 2 threads 2.37 s spinning (the
default) and 1.05 s with OMP_WAIT_POLICY=PASSIVE; beside two CPU-bound jobs, 1 thread 2.07 s,
2 threads 12.2 s spinning, 0.92 s passive. So idle threads sleep (a value the user set wins),
and tiny models run on one thread (the stages' `threads`).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
