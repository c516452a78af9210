class _HandOn:
    '''Await a handler's coroutine, calling hand_on() the first time it suspends.

    Written out as a generator because the worker must know whether its handler suspended: a handler that
    answers without suspending leaves the worker free to read the next request itself.
    '''

    def __init__(self, coro, hand_on):
        self.coro = coro
        self.hand_on = hand_on

    def __await__(self):
        coro = self.coro
        value = None
        error = None
        handed_on = False
        while True:
            try:
                if error is None:
                    yielded = coro.send(value)
                else:
                    yielded = coro.throw(error)
            except StopIteration as stop:
                return stop.value
            if not handed_on:
                handed_on = True
                self.hand_on()
            try:
                value = yield yielded
                error = None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                value = None
                error = exc


class _ReadRole:
    '''Whether a worker holds the read lock: the right to wait for and read the next request.

    A worker keeps it while its handlers answer without suspending, so that a run of quick requests costs no
    hand-over between tasks; it hands it on as soon as a handler suspends, so that a request that waits never
    holds up the next one.
    '''

    def __init__(self, nursery, int min_tasks, int max_tasks):
        self.nursery = nursery
        self.min_tasks = min_tasks
        self.max_tasks = max_tasks
        self.holding = False

    def release(self):
        if self.holding:
            self.holding = False
            worker_data.read_lock.release()

    def hand_on(self):
        self.release()
        if not worker_data.active_readers and worker_data.task_count < self.max_tasks:
            worker_data.task_count += 1
            log.debug('No tasks waiting, starting another worker (now %d total).', worker_data.task_count)
            self.nursery.start_soon(_session_loop, self.nursery, self.min_tasks, self.max_tasks,
                                    name=worker_data.get_name())


async def _wait_fuse_readable(role):
    '''Wait for FUSE fd to become readable, holding the read lock (taken here unless `role` holds it).

    Return True if the fd is readable, or False if the main loop should terminate.
    '''

    if worker_data.read_lock is None:
        worker_data.read_lock = trio.Lock()
    lock = worker_data.read_lock

    worker_data.active_readers += 1
    try:
        if not role.holding:
            nowait = getattr(lock, 'acquire_nowait', None)
            if nowait is not None and not lock.locked():
                nowait()  # taking a free lock needs no trip through the scheduler
            else:
                await lock.acquire()
            role.holding = True
        if fuse_session_exited(session):
            log.debug('FUSE session exit flag set while waiting for FUSE fd '
                      'to become readable.')
            return False
        await trio.lowlevel.wait_readable(session_fd)
    except trio.ClosedResourceError:
        log.debug('FUSE fd about to be closed.')
        return False

    finally:
        worker_data.active_readers -= 1

    return True

@async_wrapper
async def _session_loop(nursery, int min_tasks, int max_tasks):
    cdef int res
    cdef fuse_buf buf

    name = trio.lowlevel.current_task().name
    role = _ReadRole(nursery, min_tasks, max_tasks)

    buf.mem = NULL
    buf.size = 0
    buf.pos = 0
    buf.flags = 0
    try:
        while not fuse_session_exited(session):
            if not role.holding and worker_data.active_readers > min_tasks:
                log.debug('%s: too many idle tasks (%d total, %d waiting), terminating.',
                          name, worker_data.task_count, worker_data.active_readers)
                break

            if not await _wait_fuse_readable(role):
                break

            res = fuse_session_receive_buf(session, &buf)

            if res == -errno.EINTR:
                continue
            elif res < 0:
                raise OSError(-res, 'fuse_session_receive_buf failed with '
                              + strerror(-res))
            elif res == 0:
                break

            # When fuse_session_process_buf() calls back into one of our handler
            # methods, the handler will start a co-routine and store it in
            # py_retval.
            save_retval(None)
            fuse_session_process_buf(session, &buf)
            if py_retval is not None:
                await _HandOn(py_retval, role.hand_on)
    finally:
        role.release()
        log.debug('%s: terminated', name)
        stdlib.free(buf.mem)
        worker_data.task_count -= 1
