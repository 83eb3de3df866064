"""Networking helpers shared by tests, benchmarks and campaigns."""
import socket
import threading


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh_listener(banner=True, hold=5.0):
    """A listening socket on 127.0.0.1 that answers like sshd (an SSH banner) or, with
    ``banner=False``, accepts and stays silent; each connection is closed after ``hold`` s.
    The caller closes the returned socket (its port: ``getsockname()[1]``)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def loop():
        while True:
            try:
                conn, dummy = srv.accept()
            except OSError:
                return
            if banner:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6 test\r\n")
            threading.Timer(hold, conn.close).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv
