"""Real servers for tests: a visdom server on a free 127.0.0.1 port.

Use in a test module::

    from tests.servers import visdom_server  # noqa: F401  (pytest fixture)

    def test_x(visdom_server):
        opt.display_port = visdom_server.port   # opt.display_server = visdom_server.url

``visdom_client(server, env)`` returns a plain visdom client for reading windows back.
"""
import warnings

import pytest

from util.visdom_server import VisdomServer, find_free_port


@pytest.fixture(scope='module')
def visdom_server(tmp_path_factory):
    """A running visdom server (util.visdom_server.VisdomServer) shared by a test module."""
    server = VisdomServer(env_path=str(tmp_path_factory.mktemp('visdom_env')))
    try:
        server.start()
    except RuntimeError as e:
        pytest.fail('could not start a visdom server for the test: %s' % e)
    yield server
    server.stop()


@pytest.fixture
def unused_port():
    """A 127.0.0.1 port nothing listens on."""
    return find_free_port()


def visdom_client(server, env='main'):
    """A visdom.Visdom client of ``server`` (no socket thread; raises on connection errors)."""
    import visdom
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        return visdom.Visdom(server=server.url, port=server.port, env=env, use_incoming_socket=False,
                             raise_exceptions=True)
