"""How many CPU threads numpy's BLAS may use in a learnd process.

numpy's OpenBLAS starts one thread per core and has them spin while they wait for work. The
forward passes learnd runs with numpy (every served prediction, and in the learning thread the
served version's and the gate's predictions of each learned batch) are small matrix products
that one thread does faster than two: on a 2-core machine with the broker and the consumer
process busy, a 256-row forward of the default 3-64-64-1 network took 535 us with OpenBLAS's
two threads and 65 us with one, and a batch of one 13 against 12.5 us. So each process limits
the pool once at start: the learning process to ``learning.threads`` (the same budget torch
gets), a serving process to one thread (its parallelism is the number of processes).

`threadpoolctl <https://github.com/joblib/threadpoolctl>`_ (joblib's and scikit-learn's) does
the limiting at run time, for whichever BLAS numpy loaded; an environment variable such as
``OPENBLAS_NUM_THREADS`` only works when set before numpy is imported.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def limit_blas_threads(n: int) -> None:
    """From now on numpy's BLAS (and any other loaded BLAS) uses at most ``n`` threads."""
    threadpool_limits(limits=n, user_api="blas")
