"""A real RIO session over loopback TCP, judged by tshark.

The array and edge run in this process on the real reactor (127.0.0.1, an
ephemeral port). Capturing loopback needs privileges, so each side records
every FCIP frame as it writes it (``frame_tap``: one frame per
``transport.write``); the test writes them into

* an Ethernet/IPv4/TCP capture, one FCIP frame per segment, sequence numbers
  per direction, read by tshark with ``-d tcp.port==PORT,fcip`` (tshark does
  not check the FC CRC on this path), and
* a LINKTYPE 225 capture of the same FC frames with SOF/EOF ordered sets,
  where tshark checks every FC CRC (``fc.crc.status`` 1).
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from datapath.frames import capture, fc, fcip, fcp, gbe
from datapath.frames.names import format_port_id
from rcn.rio.fcp import ScsiResult
from rcn.rio.protocol import FcipClientFactory, FcipServerFactory
from tests.rcn.rio.support import (PARTNER_WWN, RecordingTarget, array_config, edge_config)
from tests.support import require_tool, tshark_fields

START = 1_700_000_000.0
BIG = bytes(range(256)) * 256                      # 64 KiB: 32 data frames
DPOK = bytes(range(200)) * 15                      # 3000 bytes of data-in


def answer(command):
    return ScsiResult(data_in=DPOK) if command.data_in_length else ScsiResult()


class LoopbackCaptureTest(TestCase):
    timeout = 120

    def setUp(self):
        self.records: list[tuple[str, bytes]] = []

    def tap(self, protocol, frame: bytes) -> None:
        sender = "array" if protocol.factory is self.client else "edge"
        self.records.append((sender, frame))

    async def session(self) -> tuple[tuple, tuple]:
        """Logins, two writes, RCN CONTROL with data-in, shutdown; the socket addresses."""
        target = RecordingTarget(result=answer)
        server = FcipServerFactory(reactor, edge_config(
            attach=lambda vs: setattr(vs, "target", target)), frame_tap=self.tap)
        self.client = FcipClientFactory(reactor, array_config(), frame_tap=self.tap)
        port = reactor.listenTCP(0, server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        protocol = await TCP4ClientEndpoint(reactor, "127.0.0.1",
                                            port.getHost().port).connect(self.client)
        array_addr, edge_addr = protocol.transport.getHost(), protocol.transport.getPeer()
        array = protocol.endpoint
        edge_down = Deferred()
        edge = server.ports[0]
        previous = edge.on_link_down
        edge.on_link_down = lambda reason: (previous(reason), edge_down.callback(reason))

        session = await array.session(PARTNER_WWN)
        self.assertTrue((await session.write(0, 0x1000, BIG)).good)
        self.assertTrue((await session.write(0, 0x2000, bytes(4096))).good)
        cdb = fcp.build_rcn_control(fcp.RcnServiceAction.RESYNC, 7, 1, allocation_length=4096)
        result = await session.execute(1, cdb, data_in_length=4096)
        self.assertEqual(result.data_in, DPOK)
        self.assertEqual(target.commands[0].data, BIG)
        await array.shutdown()
        await edge_down
        await deferLater(reactor, 0, lambda: None)
        return (array_addr.host, array_addr.port), (edge_addr.host, edge_addr.port)

    def write_captures(self, array_addr, edge_addr) -> tuple[str, str]:
        base = self.mktemp()
        os.makedirs(os.path.dirname(base), exist_ok=True)
        eth_path, fc_path = base + "-fcip.pcap", base + "-fc2.pcap"
        seq = {}
        with open(eth_path, "wb") as eth_file, open(fc_path, "wb") as fc_file:
            eth = capture.CaptureWriter(eth_file, capture.LINKTYPE_ETHERNET)
            fc2 = capture.CaptureWriter(fc_file, capture.LINKTYPE_FC_2_WITH_FRAME_DELIMS)
            for n, (sender, frame) in enumerate(self.records):
                src, dst = (array_addr, edge_addr) if sender == "array" else (edge_addr, array_addr)
                at = seq.get(src, 1000)
                seq[src] = at + len(frame)
                eth.write(gbe.build_ethernet(gbe.build_tcp(src[0], dst[0], src[1], dst[1], at,
                                                           frame)), START + n * 1e-4)
                sof, eof = fc.Sof(frame[fcip.HEADER_SIZE]), fc.Eof(frame[-4])
                unit = (fc.SOF_ORDERED_SETS[sof].to_bytes(4, "big") + frame[fcip.HEADER_SIZE + 4:-4]
                        + fc.EOF_ORDERED_SETS[eof][0].to_bytes(4, "big"))
                fc2.write(unit, START + n * 1e-4)
            eth.close()
            fc2.close()
        return eth_path, fc_path

    def test_session_judged_by_tshark(self):
        require_tool(self, "tshark")
        d = ensureDeferred(self.session())
        d.addCallback(lambda addrs: self.check(*addrs))
        return d

    def check(self, array_addr, edge_addr) -> None:
        eth_path, fc_path = self.write_captures(array_addr, edge_addr)
        headers = [fcip.parse_fcip_frame(frame).fc for _, frame in self.records]
        names = ["fcip.framelen", "fc.r_ctl", "fc.s_id", "fc.d_id", "fc.f_ctl", "fc.ox_id",
                 "fcels.opcode", "fcdns.opcode", "scsi_sbc.opcode", "fcp.status", "fcp.dl",
                 "_ws.malformed"]
        rows = tshark_fields(self, eth_path, names, "-d", f"tcp.port=={edge_addr[1]},fcip",
                             "-o", "fc.max_frame_size:2048")
        self.assertEqual(len(rows), len(self.records))
        got = [dict(zip(names, row)) for row in rows]
        for n, (row, (_, frame), frame_fc) in enumerate(zip(got, self.records, headers), 1):
            h = frame_fc.header
            self.assertEqual(
                {k: row[k] for k in names[:6] + ["_ws.malformed"]},
                {"fcip.framelen": str(len(frame) // 4), "fc.r_ctl": f"0x{h['r_ctl']:02x}",
                 "fc.s_id": format_port_id(h["s_id"]), "fc.d_id": format_port_id(h["d_id"]),
                 "fc.f_ctl": f"0x{h['f_ctl']:06x}", "fc.ox_id": f"0x{h['ox_id']:04x}",
                 "_ws.malformed": ""}, f"packet {n}")
        # logins and logouts, in order: FLOGI, PLOGI (name server), PLOGI, PRLI, LOGO, LOGO,
        # each answered with LS_ACC (0x02)
        self.assertEqual([r["fcels.opcode"] for r in got if r["fcels.opcode"]],
                         ["0x04", "0x02", "0x03", "0x02", "0x03", "0x02", "0x20", "0x02",
                          "0x05", "0x02", "0x05", "0x02"])
        self.assertEqual([r["fcdns.opcode"] for r in got if r["fcdns.opcode"]],
                         ["0x0121", "0x8002"])
        self.assertEqual([r["scsi_sbc.opcode"] for r in got if r["scsi_sbc.opcode"]],
                         ["0x8a", "0x8a"])
        self.assertEqual([r["fcp.dl"] for r in got if r["fcp.dl"]],
                         [str(len(BIG)), "4096", "4096"])
        self.assertEqual([r["fcp.status"] for r in got if r["fcp.status"]], ["0x00"] * 3)
        data = [h for h in headers if h.header["r_ctl"] == fc.RCtl.FCP_DATA]
        self.assertEqual(len(data), 32 + 2 + 2)
        # the same frames with ordered sets: tshark checks every FC CRC
        crc = tshark_fields(self, fc_path, ["fc.crc.status", "fc.r_ctl"])
        self.assertEqual(len(crc), len(self.records))
        self.assertEqual({row[0] for row in crc}, {"1"})
        self.assertEqual([row[1] for row in crc],
                         [f"0x{h.header['r_ctl']:02x}" for h in headers])
