    cdef fuse_bufvec src
    cdef int fd = -1
    cdef int ret
    read_fd = getattr(operations, 'read_fd', None)
    if read_fd is not None:
        try:
            fd = read_fd(fi.fh)
        except Exception:
            fd = -1  # the handler's read() answers instead
    if fd >= 0:
        src.count = 1
        src.idx = 0
        src.off = 0
        src.buf[0].size = size
        src.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK
        src.buf[0].mem = NULL
        src.buf[0].fd = fd
        src.buf[0].pos = off
        # libfuse splices the data from the file into the reply where it can (FUSE_CAP_SPLICE_WRITE), else
        # reads it into a buffer of its own; a failed read becomes the error reply.
        ret = fuse_reply_data(req, &src, FUSE_BUF_SPLICE_MOVE)
        if ret != 0:
            log.error('fuse_read(): fuse_reply_data failed with %s', strerror(-ret))
        return
