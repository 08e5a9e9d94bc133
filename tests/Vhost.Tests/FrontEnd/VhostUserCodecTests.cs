using Vhost.Memory;
using Vhost.Protocol;
using Vhost.Rings;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.FrontEnd;

public class VhostUserCodecTests
{
    private static byte[] Hex(string s) => Convert.FromHexString(s.Replace(" ", "", StringComparison.Ordinal));

    [Fact]
    public void Header_and_u64_payload_encode_little_endian_with_version_and_need_reply()
    {
        var bytes = VhostUserMessage.Encode(VhostUserRequest.SetFeatures, VhostUserPayload.U64(0x0102030405060708), needReply: true);
        Assert.Equal(Hex("02000000 09000000 08000000 0807060504030201"), bytes);
    }

    [Fact]
    public void Header_decodes_flags()
    {
        var h = VhostUserHeader.Read(Hex("0b000000 05000000 08000000"));
        Assert.Equal((uint)VhostUserRequest.GetVringBase, h.Request);
        Assert.Equal(1u, h.Version);
        Assert.True(h.IsReply);
        Assert.False(h.NeedsReply);
        Assert.Equal(8u, h.Size);
    }

    [Fact]
    public void Size_field_can_disagree_with_the_bytes()
    {
        var bytes = VhostUserMessage.EncodeWithSize(5, 1, 1000, [1, 2, 3]);
        Assert.Equal(Hex("05000000 01000000 e8030000 010203"), bytes);
        var m = VhostUserMessage.Decode(bytes);
        Assert.Equal(1000u, m.Header.Size);
        Assert.Equal(new byte[] { 1, 2, 3 }, m.Payload);
        Assert.Equal(bytes, m.ToArray());
    }

    [Fact]
    public void Vring_state()
    {
        var p = VhostUserPayload.VringState(1, 256);
        Assert.Equal(Hex("01000000 00010000"), p);
        Assert.Equal(new VringState(1, 256), VhostUserPayload.ReadVringState(p));
    }

    [Fact]
    public void Vring_address_orders_desc_used_avail_log()
    {
        var a = new VringAddress(2, 1, 0x1111, 0x2222, 0x3333, 0x4444);
        var p = VhostUserPayload.VringAddress(a);
        Assert.Equal(Hex(
            "02000000 01000000 " +
            "1111000000000000 2222000000000000 3333000000000000 4444000000000000"), p);
        Assert.Equal(a, VhostUserPayload.ReadVringAddress(p));
    }

    [Fact]
    public void Memory_table_has_count_padding_then_regions()
    {
        MemoryRegionInfo[] regions =
        [
            new(0x1000, 0x2000, 0x7f00_0000_1000, 0),
            new(0x10_0000, 0x8000, 0x7f00_0010_0000, 0x40),
        ];
        var p = VhostUserPayload.MemoryTable(regions);
        Assert.Equal(Hex(
            "02000000 00000000 " +
            "0010000000000000 0020000000000000 00100000007f0000 0000000000000000 " +
            "0000100000000000 0080000000000000 00001000007f0000 4000000000000000"), p);
        var (count, back) = VhostUserPayload.ReadMemoryTable(p);
        Assert.Equal(2u, count);
        Assert.Equal(regions, back);
    }

    [Fact]
    public void Memory_table_can_lie_about_its_count_and_pad_to_eight_slots()
    {
        MemoryRegionInfo[] one = [new(0, 0x1000, 0x5000, 0)];
        var lying = VhostUserPayload.MemoryTable(one, claimedCount: 9);
        Assert.Equal(8 + 32, lying.Length);
        Assert.Equal(9u, BitConverter.ToUInt32(lying, 0));
        var (count, regions) = VhostUserPayload.ReadMemoryTable(lying);
        Assert.Equal(9u, count);
        Assert.Single(regions);

        var padded = VhostUserPayload.MemoryTable(one, padToMax: true);
        Assert.Equal(8 + 8 * 32, padded.Length);
        Assert.Equal(1u, BitConverter.ToUInt32(padded, 0));
    }

    [Fact]
    public void Single_region_starts_with_eight_bytes_of_padding()
    {
        var r = new MemoryRegionInfo(0xa, 0xb, 0xc, 0xd);
        var p = VhostUserPayload.SingleRegion(r);
        Assert.Equal(Hex(
            "0000000000000000 0a00000000000000 0b00000000000000 0c00000000000000 0d00000000000000"), p);
        Assert.Equal(r, VhostUserPayload.ReadSingleRegion(p));
    }

    [Fact]
    public void Config_header_then_bytes()
    {
        var p = VhostUserPayload.Config(4, 3, 1, [0xaa, 0xbb, 0xcc]);
        Assert.Equal(Hex("04000000 03000000 01000000 aabbcc"), p);
        var c = VhostUserPayload.ReadConfig(p);
        Assert.Equal((4u, 3u, 1u), (c.Offset, c.Size, c.Flags));
        Assert.Equal(new byte[] { 0xaa, 0xbb, 0xcc }, c.Data);
    }

    [Fact]
    public void Inflight_is_24_bytes_with_tail_padding()
    {
        var i = new InflightPayload(0x1000, 0x20, 2, 256);
        var p = VhostUserPayload.Inflight(i);
        Assert.Equal(Hex("0010000000000000 2000000000000000 0200 0001 00000000"), p);
        Assert.Equal(i, VhostUserPayload.ReadInflight(p));
    }

    [Fact]
    public void Log()
    {
        var l = new LogPayload(0x4000, 0x10);
        var p = VhostUserPayload.Log(l);
        Assert.Equal(Hex("0040000000000000 1000000000000000"), p);
        Assert.Equal(l, VhostUserPayload.ReadLog(p));
    }

    [Fact]
    public void Iotlb_is_the_32_byte_c_struct()
    {
        var m = new IotlbPayload(0x1000, 0x2000, 0x3000, IotlbPayload.PermReadWrite, IotlbPayload.TypeUpdate);
        var p = VhostUserPayload.Iotlb(m);
        Assert.Equal(Hex("0010000000000000 0020000000000000 0030000000000000 03 02 000000000000"), p);
        Assert.Equal(m, VhostUserPayload.ReadIotlb(p));
    }

    [Fact]
    public void Vring_file_carries_index_in_low_byte_and_no_fd_in_bit_8()
    {
        Assert.Equal(Hex("0301000000000000"), VhostUserPayload.VringFile(3, noFd: true));
        Assert.Equal(Hex("0500000000000000"), VhostUserPayload.VringFile(5, noFd: false));
        Assert.Equal(Hex("2c00000000000000"), VhostUserPayload.VringFile(300, noFd: false));
    }

    [Fact]
    public void Rarp_mac_fills_the_first_six_bytes()
    {
        Assert.Equal(Hex("525400123456 0000"), VhostUserPayload.Mac(Hex("525400123456")));
        Assert.Throws<ArgumentException>(() => VhostUserPayload.Mac([1, 2, 3]));
    }

    [Fact]
    public void Parsers_reject_short_payloads()
    {
        Assert.Throws<InvalidDataException>(() => VhostUserPayload.ReadU64(new byte[7]));
        Assert.Throws<InvalidDataException>(() => VhostUserPayload.ReadVringAddress(new byte[39]));
        Assert.Throws<InvalidDataException>(() => VhostUserPayload.ReadSingleRegion(new byte[39]));
        Assert.Throws<InvalidDataException>(() => VhostUserPayload.ReadMemoryTable(new byte[7]));
    }
}
