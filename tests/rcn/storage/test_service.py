"""rcn-storage's service tree opens its files in startService, not in make_service.

twistd applies ``--umask`` and ``--uid`` between the two (tests/rcn/test_twistd.py runs the
real daemon); here the tree is built and started in this process, on port 0.
"""

from __future__ import annotations

import errno
import os
import stat

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from rcn.storage.config import parse_config
from rcn.storage.service import make_service
from rcn.storage.volume import Volume, VolumeError
from rcn.tap import StartError
from tests.support import start_as_twistd_would


def config(data_dir: str):
    return parse_config({"array": {"wwpn": "50:0a:09:80:00:00:00:01", "data_dir": data_dir},
                         "nbd": {"listen": "tcp:0:interface=127.0.0.1"},
                         "control": {"listen": "tcp:0:interface=127.0.0.1"},
                         "volume": [{"lun": 0, "name": "vol0", "capacity": "1MiB"},
                                    {"lun": 1, "capacity": "1MiB"}]})


class OpenAtStartTests(TestCase):
    def setUp(self):
        self.data = os.path.abspath(self.mktemp())

    def test_make_service_touches_no_file_start_creates_them_under_the_umask(self):
        top, array = make_service(config(self.data), reactor)
        self.assertFalse(os.path.exists(self.data))
        self.assertTrue(all(v.closed for v in array.volumes.values()))
        start_as_twistd_would(self, top)
        modes = {name: stat.S_IMODE(os.stat(os.path.join(self.data, name)).st_mode)
                 for name in os.listdir(self.data)}
        self.assertEqual(modes, {"vol0.img": 0o600, "lun1.img": 0o600, "pairs.json": 0o600})
        self.assertEqual(stat.S_IMODE(os.stat(self.data).st_mode), 0o700)
        array.volumes[0].write(0, b"x" * 512)
        self.assertEqual(array.volumes[0].read(0, 512), b"x" * 512)

    def test_stop_closes_the_volumes(self):
        top, array = make_service(config(self.data), reactor)
        top.privilegedStartService()
        top.startService()
        self.assertFalse(any(v.closed for v in array.volumes.values()))
        return top.stopService().addCallback(
            lambda _: self.assertTrue(all(v.closed for v in array.volumes.values())))

    def test_start_that_cannot_create_the_data_directory_raises_start_error_naming_it(self):
        with open(self.data, "w"):           # a file where the directory should be
            pass
        top, _ = make_service(config(os.path.join(self.data, "volumes")), reactor)
        top.privilegedStartService()
        self.addCleanup(top.stopService)
        with self.assertRaises(StartError) as caught:
            top.startService()
        message = str(caught.exception)
        self.assertIn("rcn-storage 50:0a:09:80:00:00:00:01: cannot open its files", message)
        self.assertIn(os.path.join(self.data, "volumes"), message)
        self.assertIn("running as uid", message)


class VolumeOpenLaterTests(TestCase):
    def test_open_now_false_creates_nothing_and_answers_ebadf_until_opened(self):
        path = os.path.abspath(self.mktemp())
        volume = Volume(path, 0, 4096, open_now=False)
        self.addCleanup(volume.close)
        self.assertFalse(os.path.exists(path))
        with self.assertRaises(VolumeError) as caught:
            volume.read(0, 512)
        self.assertEqual(caught.exception.errno, errno.EBADF)
        volume.open()
        self.assertEqual(os.path.getsize(path), 4096)
        self.assertEqual(volume.read(0, 512), bytes(512))
        with self.assertRaises(VolumeError) as caught:
            volume.open()
        self.assertEqual(caught.exception.errno, errno.EBUSY)
