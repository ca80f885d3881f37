"""Volume: sparse creation, range and alignment checks, trim/zeroes, FUA, persistence."""

from __future__ import annotations

import errno
import os

from twisted.trial.unittest import SynchronousTestCase

from rcn.storage import volume as volume_module
from rcn.storage.volume import ZERO_CHUNK, Volume, VolumeError

MiB = 1 << 20


class VolumeTestCase(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "lun0.img")

    def open(self, capacity=16 * MiB, **kw) -> Volume:
        volume = Volume(self.path, kw.pop("lun", 0), capacity, **kw)
        self.addCleanup(volume.close)
        return volume

    def assertVolumeError(self, code: int, func, *args, **kw) -> VolumeError:
        exc = self.assertRaises(VolumeError, func, *args, **kw)
        self.assertEqual(exc.errno, code, str(exc))
        self.assertEqual(exc.kind, errno.errorcode[code])
        self.assertIsInstance(exc, ValueError)
        return exc


class CreateTests(VolumeTestCase):
    def test_new_file_is_sparse(self):
        volume = self.open(64 * MiB, block_size=4096)
        self.assertEqual(os.path.getsize(self.path), 64 * MiB)
        self.assertLess(volume.allocated_bytes(), MiB)
        self.assertEqual((volume.capacity, volume.block_size, volume.block_count),
                         (64 * MiB, 4096, 16384))
        self.assertEqual(volume.read(10 * MiB, 4096), bytes(4096))

    def test_capacity_must_be_whole_blocks(self):
        exc = self.assertVolumeError(errno.EINVAL, Volume, self.path, 0, 4096 + 100)
        self.assertIn("multiple of the block size 512", str(exc))
        self.assertFalse(os.path.exists(self.path))

    def test_bad_parameters(self):
        self.assertVolumeError(errno.EINVAL, Volume, self.path, 0, 0)
        self.assertVolumeError(errno.EINVAL, Volume, self.path, 0, 4096, block_size=3)
        self.assertVolumeError(errno.EINVAL, Volume, self.path, -1, 4096)

    def test_create_false_needs_the_file(self):
        exc = self.assertVolumeError(errno.ENOENT, Volume, self.path, 0, MiB, create=False)
        self.assertIn("create=False", str(exc))

    def test_shorter_file_is_extended_longer_refused(self):
        with open(self.path, "wb") as f:
            f.write(b"\x11" * 1024)
        volume = self.open(MiB)
        self.assertEqual(os.path.getsize(self.path), MiB)
        self.assertEqual(volume.read(0, 1024), b"\x11" * 1024)
        volume.close()
        exc = self.assertVolumeError(errno.EINVAL, Volume, self.path, 0, 512)
        self.assertIn("refusing to truncate", str(exc))
        self.assertVolumeError(errno.EINVAL, Volume, self.path, 0, 2 * MiB, create=False)
        self.assertEqual(os.path.getsize(self.path), MiB)

    def test_not_a_regular_file(self):
        self.assertVolumeError(errno.EISDIR, Volume, self.dir, 0, MiB, create=False)
        fifo = os.path.join(self.dir, "fifo")
        os.mkfifo(fifo)
        exc = self.assertVolumeError(errno.EINVAL, Volume, fifo, 0, MiB)
        self.assertIn("not a regular file", str(exc))


class IoTests(VolumeTestCase):
    def test_write_read_any_alignment(self):
        volume = self.open()
        volume.write(100, b"hello")
        volume.write(4000, memoryview(b"x" * 200))
        self.assertEqual(volume.read(98, 9), b"\0\0hello\0\0")
        self.assertEqual(volume.read(4000, 200), b"x" * 200)

    def test_ranges(self):
        volume = self.open(MiB)
        volume.write(MiB - 4, b"abcd")
        self.assertEqual(volume.read(MiB - 4, 4), b"abcd")
        self.assertEqual(volume.read(MiB, 0), b"")
        exc = self.assertVolumeError(errno.EINVAL, volume.read, MiB - 4, 5)
        self.assertIn("ends past the capacity 1048576", str(exc))
        self.assertVolumeError(errno.ENOSPC, volume.write, MiB - 4, b"abcde")
        self.assertVolumeError(errno.ENOSPC, volume.write_zeroes, MiB, 1, True)
        self.assertVolumeError(errno.EINVAL, volume.trim, MiB - 512, 1024)
        self.assertVolumeError(errno.EINVAL, volume.read, -1, 4)
        self.assertVolumeError(errno.EINVAL, volume.read, 0, -4)
        self.assertVolumeError(errno.EINVAL, volume.read, 0.5, 4)
        self.assertEqual(volume.read(MiB - 4, 4), b"abcd")

    def test_strict_alignment(self):
        volume = self.open(MiB, block_size=4096, strict_alignment=True)
        volume.write(8192, b"\1" * 4096)
        exc = self.assertVolumeError(errno.EINVAL, volume.write, 100, b"\1" * 4096)
        self.assertIn("not aligned to the block size 4096", str(exc))
        self.assertVolumeError(errno.EINVAL, volume.read, 0, 100)
        self.assertVolumeError(errno.EINVAL, volume.trim, 512, 4096)

    def test_trim_reads_back_zero_and_frees_space(self):
        volume = self.open(8 * MiB)
        volume.write(0, b"\xab" * (4 * MiB))
        volume.flush()
        before = volume.allocated_bytes()
        volume.trim(MiB, 2 * MiB)
        self.assertEqual(volume.read(MiB, 2 * MiB), bytes(2 * MiB))
        self.assertEqual(volume.read(0, MiB), b"\xab" * MiB)
        self.assertEqual(volume.read(3 * MiB, MiB), b"\xab" * MiB)
        self.assertLess(volume.allocated_bytes(), before)
        volume.trim(100, 0)  # empty range: nothing to do

    def test_unaligned_trim_zeroes_exactly_the_range(self):
        volume = self.open(MiB)
        volume.write(0, b"\xcd" * 16384)
        volume.trim(1000, 5000)
        self.assertEqual(volume.read(0, 16384),
                         b"\xcd" * 1000 + bytes(5000) + b"\xcd" * (16384 - 6000))

    def test_write_zeroes(self):
        volume = self.open(8 * MiB)
        volume.write(0, b"\x5a" * (4 * MiB))
        volume.write_zeroes(0, MiB, may_trim=True)
        allocated = volume.allocated_bytes()
        volume.write_zeroes(2 * MiB, MiB, may_trim=False)  # NBD NO_HOLE: stays allocated
        self.assertEqual(volume.read(0, MiB), bytes(MiB))
        self.assertEqual(volume.read(2 * MiB, MiB), bytes(MiB))
        self.assertEqual(volume.read(MiB, MiB), b"\x5a" * MiB)
        self.assertEqual(volume.allocated_bytes(), allocated)

    def test_zero_fallback_writes_bounded_chunks(self):
        """Without fallocate modes, zeroes are written in ZERO_CHUNK pieces."""
        volume = self.open(8 * MiB)
        volume.write(0, b"\x77" * (8 * MiB))
        volume._punch = volume._zero_range = False
        sizes = []
        real = os.pwrite

        def pwrite(fd, data, offset):
            sizes.append(len(data))
            return real(fd, data, offset)
        self.patch(volume_module.os, "pwrite", pwrite)
        volume.trim(100, 3 * MiB)
        volume.write_zeroes(5 * MiB, MiB + 7, may_trim=False)
        self.assertTrue(sizes and max(sizes) <= ZERO_CHUNK, sizes)
        self.assertEqual(sum(sizes), 3 * MiB + MiB + 7)
        self.assertEqual(volume.read(0, 8 * MiB),
                         b"\x77" * 100 + bytes(3 * MiB) + b"\x77" * (2 * MiB - 100)
                         + bytes(MiB + 7) + b"\x77" * (2 * MiB - 7))

    def test_unsupported_fallocate_falls_back(self):
        volume = self.open(MiB)
        volume.write(0, b"\x01" * 8192)
        self.patch(volume_module, "_FALLOCATE", None)
        volume.trim(0, 4096)
        volume.write_zeroes(4096, 100, may_trim=False)
        self.assertEqual(volume.read(0, 8192), bytes(4196) + b"\x01" * (8192 - 4196))
        self.assertFalse(volume._punch)

    def test_fua_and_flush_sync(self):
        volume = self.open(MiB)
        synced = []
        self.patch(volume_module.os, "fdatasync", synced.append)
        volume.write(0, b"a")
        self.assertEqual(synced, [])
        volume.write(0, b"b", fua=True)
        self.assertEqual(synced, [volume.fileno()])
        volume.flush()
        self.assertEqual(len(synced), 2)

    def test_os_errors_become_volume_errors(self):
        volume = self.open(MiB)

        def full(fd, data, offset):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.patch(volume_module.os, "pwrite", full)
        exc = self.assertVolumeError(errno.ENOSPC, volume.write, 0, b"data")
        self.assertIn("write at offset 0 length 4", str(exc))
        self.assertIsInstance(exc.__cause__, OSError)

    def test_closed(self):
        volume = self.open(MiB)
        volume.close()
        volume.close()
        self.assertTrue(volume.closed)
        self.assertVolumeError(errno.EBADF, volume.read, 0, 1)
        self.assertVolumeError(errno.EBADF, volume.flush)
        self.assertIn("closed", repr(volume))


class PersistenceTests(VolumeTestCase):
    def test_data_survives_reopen(self):
        with Volume(self.path, 3, 4 * MiB) as volume:
            volume.write(MiB + 7, b"persistent")
            volume.write(3 * MiB, b"\xee" * 4096, fua=True)
            volume.trim(3 * MiB, 1024)
        self.assertTrue(volume.closed)
        reopened = self.open(4 * MiB, lun=3, create=False)
        self.assertEqual(reopened.lun, 3)
        self.assertEqual(reopened.read(MiB + 7, 10), b"persistent")
        self.assertEqual(reopened.read(3 * MiB, 4096), bytes(1024) + b"\xee" * 3072)
        with open(self.path, "rb") as f:
            f.seek(MiB + 7)
            self.assertEqual(f.read(10), b"persistent")
