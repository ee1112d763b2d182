"""S3 servers on loopback for tests and benchmarks: SeaweedFS, moto's server, Ceph RGW, LocalStack.

Nothing here is imported by the stores themselves; tests, benchmarks and your
own test suites start a server with, for example::

    from adapters.testing.seaweedfs import SeaweedFSServer

    with SeaweedFSServer() as endpoint:
        store = S3ModelStorage("models", endpoint_url=endpoint.endpoint_url, ...)
"""
