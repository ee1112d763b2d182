"""Benchmarks of every ModelStorage backend against the raw SDK calls they wrap.

Run ``python -m benchmarks --help`` from the repository root. The modules:

- ``endpoint``    where to run: a SeaweedFS started on loopback, or ``--url``
- ``candidates``  the adapters, the raw boto3 / MinIO / file calls, the local stores
- ``measure``     clocks, RSS peaks, medians
- ``throughput``  put/get throughput per model size, small-model operations per second
- ``requestcount`` HTTP requests per ModelStorage operation, counted on the wire
- ``memprobe``    peak-memory checks, each in its own child process
- ``targets``     the pass/fail verdicts
- ``report``      the markdown tables and the PNG plot
"""
