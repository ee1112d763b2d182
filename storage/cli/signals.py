"""Stopping a command: SIGTERM and SIGHUP end it as Ctrl-C does.

``kill``, ``docker stop``, systemd and ``timeout`` send SIGTERM; a terminal or
ssh session that goes away sends SIGHUP. Left to their default action they kill
the process on the spot, and a partial file, an open multipart upload or half
a simulation stays behind. Here each one raises ``Interrupted`` in the main
thread instead: a KeyboardInterrupt, so whatever cleans up after Ctrl-C (the
``with`` blocks of writes, stores and temporary files) cleans up after them
too. The command then exits 128 + the signal's number: 130 for Ctrl-C, 143 for
SIGTERM, 129 for SIGHUP.

Once one has arrived, the next ones are ignored until the command ends: the
cleanup must be allowed to finish, and ``timeout`` sends SIGTERM twice (to the
command, then to its process group). SIGKILL still stops it at once.

Python runs signal handlers in the main thread only, but the kernel may hand
a signal to any thread of the process (it does after a SIGSTOP and SIGCONT,
as ``docker pause`` or Ctrl-Z and ``bg`` give): the main thread, blocked in a
read of stdin or of a socket, then is not woken and the handler waits. So a
small thread hears every signal through ``signal.set_wakeup_fd`` and sends the
first one again, to the main thread itself.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

from storage.cli.exits import EXIT_SIGNAL_BASE

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return EXIT_SIGNAL_BASE + self.signum


@contextlib.contextmanager
def stopping_signals_interrupt() -> Iterator[None]:
    """While inside, SIGINT, SIGTERM and SIGHUP raise ``Interrupted``; the handlers before are restored after.

    A signal the process was started with ignored stays ignored: ``nohup``
    ignores SIGHUP, and a shell's background job ignores SIGINT, on purpose.
    Once one has arrived, the others stay ignored after the block too: the
    process is on its way out. Outside the main thread nothing can be
    installed, and nothing is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        if arrived:
            return  # the cleanup of the first one is under way
        arrived.append(signum)
        raise Interrupted(signum)

    previous = {}
    for signum in STOPPING_SIGNALS:
        current = signal.getsignal(signum)
        if current == signal.SIG_IGN:
            continue
        previous[signum] = signal.SIG_DFL if current is None else current
        signal.signal(signum, interrupt)
    try:
        with _forwarded_to_main_thread(set(previous)):
            yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if arrived else handler)


@contextlib.contextmanager
def _forwarded_to_main_thread(signals: set[int]) -> Iterator[None]:
    """Send the first of ``signals`` that arrives on to the main thread, whichever thread it reached."""
    hearing, telling = socket.socketpair()
    telling.setblocking(False)  # set_wakeup_fd's condition: the handler must never block
    try:
        earlier = signal.set_wakeup_fd(telling.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter
        hearing.close()
        telling.close()
        yield
        return
    main = threading.main_thread().ident
    assert main is not None

    def forward() -> None:
        forwarded = False
        while data := hearing.recv(64):
            for signum in data:
                if signum in signals and not forwarded:
                    forwarded = True
                    signal.pthread_kill(main, signum)

    forwarder = threading.Thread(target=forward, name="modelstorage-signals", daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(earlier)
        telling.close()  # the forwarder reads the end, and stops
        forwarder.join(timeout=1)
        hearing.close()
