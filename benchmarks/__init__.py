"""Benchmarks of every ModelStorage backend against what a user would pick instead: the raw SDK calls
they wrap, FEDn's own TempModelStorage; and FEDn's round end to end, with and without the read-through cache.

Run ``python -m benchmarks --help`` from the repository root. The modules:

- ``endpoint``     where to run: a SeaweedFS started on loopback, or ``--url``
- ``candidates``   the adapters, the raw boto3 / MinIO / file calls, the local stores
- ``measure``      clocks, RSS peaks, medians, child processes
- ``throughput``   put/get throughput per model size, small-model operations per second
- ``wire``         requests and bytes on the wire, counted at urllib3
- ``requestcount`` HTTP requests per ModelStorage operation
- ``fednprotocol`` FEDn's upload and download protocol, and the interpreter FEDn runs in
- ``storeprobe``   one store in a child process: FEDn's calls, a FEDn round, a download fan-out
- ``scenarios``    those runs over every store, interleaved, and their medians
- ``memprobe``     peak-memory checks, each in its own child process
- ``targets``      the pass/fail verdicts
- ``report``       the markdown tables and the PNG plots
"""
