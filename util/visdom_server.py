"""Start and stop a local visdom server in a subprocess (for tests and quick local runs).

``python -m visdom.server`` first downloads the browser scripts and crashes when offline;
``visdom.server.run_server.main()`` skips that download. Its HTTP API (what the training
:class:`util.visualizer.Visualizer` and the tests use) works without those scripts; only the
web UI needs them.

Usage::

    with VisdomServer() as server:          # free port on 127.0.0.1, temporary env_path
        opt.display_port = server.port
        ...
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

_LAUNCH = ("import sys; sys.argv = ['visdom'] + sys.argv[1:]; "
           "from visdom.server.run_server import main; main()")


def find_free_port(host='127.0.0.1'):
    """Return a TCP port that nothing listens on at ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class VisdomServer:
    """A visdom server bound to 127.0.0.1, run as a child process.

    port: a fixed port, or None for a free one (chosen again if another process takes it first).
    env_path: folder for the server's saved environments; None makes a temporary folder that
    :meth:`stop` removes. The server's stdout/stderr go to ``<env_path>/server.log`` (read
    :attr:`log` when it fails to start).
    """

    host = '127.0.0.1'

    def __init__(self, port=None, env_path=None, startup_timeout=30.0, python=sys.executable):
        self._fixed_port = port
        self.port = port
        self._own_env_path = env_path is None
        self.env_path = env_path
        self.startup_timeout = startup_timeout
        self.python = python
        self.proc = None

    @property
    def url(self):
        """Server address without the port, as visdom.Visdom(server=...) wants it."""
        return 'http://%s' % self.host

    @property
    def log(self):
        """Text the server printed so far ('' when none)."""
        path = os.path.join(self.env_path or '', 'server.log')
        if not self.env_path or not os.path.exists(path):
            return ''
        with open(path, errors='replace') as f:
            return f.read()

    def is_alive(self):
        """True while the server answers its HTTP API."""
        try:
            req = urllib.request.Request('http://%s:%d/env_state' % (self.host, self.port),
                                         data=json.dumps({}).encode(), method='POST')
            with urllib.request.urlopen(req, timeout=1.0) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def start(self):
        """Launch the server and wait until it answers. Raises RuntimeError (with the server's
        log) if it exits or does not answer within ``startup_timeout`` seconds."""
        if self.env_path is None:
            self.env_path = tempfile.mkdtemp(prefix='visdom_env_')
        os.makedirs(self.env_path, exist_ok=True)
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            self.port = self._fixed_port or find_free_port(self.host)
            if self._launch():
                return self
        raise RuntimeError('visdom server did not start on %s:%s:\n%s'
                           % (self.host, self.port, self.log[-4000:]))

    def _launch(self):
        args = [self.python, '-c', _LAUNCH, '-port', str(self.port), '--hostname', self.host,
                '-env_path', self.env_path, '-logging_level', 'WARNING', '-bind_local']
        with open(os.path.join(self.env_path, 'server.log'), 'ab') as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # exited (e.g. port taken meanwhile)
                self.proc = None
                return False
            if self.is_alive():
                return True
            time.sleep(0.1)
        self._terminate()
        return False

    def _terminate(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def stop(self):
        """Stop the server and remove the temporary env_path (if this object made it)."""
        self._terminate()
        if self._own_env_path and self.env_path:
            shutil.rmtree(self.env_path, ignore_errors=True)
            self.env_path = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
