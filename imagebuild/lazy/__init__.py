"""Lazy pulling (`run --lazy`, `mount --lazy`): an image's eStargz layers mounted before they are downloaded.

remote.py fetches the manifest, the config and each layer's TOC (footer and TOC by HTTP Range requests, the TOC
checked against the layer's `containerd.io/snapshot/stargz/toc.digest` annotation); skeleton.py makes a layer's
*skeleton* from its TOC (the tree as extraction makes it, regular files as sparse placeholders naming what to
fetch); fetcher.py is the unionfs Fetcher the daemon loads, which fetches a file's chunks by Range requests,
checks each against its TOC digest and keeps the file in the cache (cache.py); prepare.py puts it together for
the CLI.
"""
