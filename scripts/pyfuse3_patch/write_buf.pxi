    cdef fuse_bufvec dst
    cdef ssize_t res
    cdef int fd = -1
    cdef int ret
    write_fd = getattr(operations, 'write_fd', None)
    if write_fd is not None:
        try:
            fd = write_fd(fi.fh)
        except Exception:
            fd = -1  # the handler's write() answers instead
    if fd >= 0:
        dst.count = 1
        dst.idx = 0
        dst.off = 0
        dst.buf[0].size = fuse_buf_size(bufv) - bufv.off
        dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK
        dst.buf[0].mem = NULL
        dst.buf[0].fd = fd
        dst.buf[0].pos = off
        res = fuse_buf_copy(&dst, bufv, 0)
        if res < 0:
            ret = fuse_reply_err(req, <int> -res)
        else:
            ret = fuse_reply_write(req, <size_t> res)
        if ret != 0:
            log.error('fuse_write_buf(): fuse_reply_* failed with %s', strerror(-ret))
        return
