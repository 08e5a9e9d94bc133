using System.Buffers.Binary;
using Vhost.Net;

namespace Vhost.Cli;

/// <summary>The few frames the tool builds or answers itself.</summary>
internal static class Frames
{
    /// <summary>10.0.0.1, the address the responder answers for, and the MAC it answers with.</summary>
    public static readonly byte[] ResponderIp = [10, 0, 0, 1];
    public static readonly byte[] ResponderMac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

    public static ulong Mac(ReadOnlySpan<byte> frame, int offset) =>
        ((ulong)BinaryPrimitives.ReadUInt32BigEndian(frame[offset..]) << 16) | BinaryPrimitives.ReadUInt16BigEndian(frame[(offset + 4)..]);

    public static void SwapMacs(Span<byte> frame)
    {
        Span<byte> t = stackalloc byte[6];
        frame[..6].CopyTo(t);
        frame.Slice(6, 6).CopyTo(frame);
        t.CopyTo(frame[6..]);
    }

    /// <summary>An Ethernet/IPv4/UDP frame of <paramref name="size"/> bytes, as testpmd's txonly sends.</summary>
    public static byte[] TxOnly(int size)
    {
        var f = new byte[size];
        f.AsSpan(0, 6).Fill(0xff);
        ResponderMac.CopyTo(f, 6);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0800);
        var ip = f.AsSpan(14);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(size - 14));
        ip[8] = 64;
        ip[9] = 17;
        ResponderIp.CopyTo(ip[12..]);
        new byte[] { 10, 0, 0, 2 }.CopyTo(ip[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], IpChecksum(ip[..20]));
        var udp = ip[20..];
        BinaryPrimitives.WriteUInt16BigEndian(udp, 9);
        BinaryPrimitives.WriteUInt16BigEndian(udp[2..], 9);
        BinaryPrimitives.WriteUInt16BigEndian(udp[4..], (ushort)(size - 34));
        return f;
    }

    private static ushort IpChecksum(ReadOnlySpan<byte> header)
    {
        uint sum = 0;
        for (int i = 0; i + 1 < header.Length; i += 2) sum += BinaryPrimitives.ReadUInt16BigEndian(header[i..]);
        while (sum >> 16 != 0) sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }

    /// <summary>Turns an ARP request or ICMP echo request for 10.0.0.1 into its reply, in place.</summary>
    public static bool Respond(Packet p)
    {
        var f = p.Data[..p.Meta.DataLength];
        if (p.Meta.Next >= 0 || f.Length < 42) return false;
        ushort type = BinaryPrimitives.ReadUInt16BigEndian(f[12..]);
        if (type == 0x0806)
        {
            var arp = f[14..];
            if (BinaryPrimitives.ReadUInt16BigEndian(arp[6..]) != 1 || !arp.Slice(24, 4).SequenceEqual(ResponderIp)) return false;
            arp.Slice(8, 10).CopyTo(arp[18..]);          // the requester becomes the target
            ResponderMac.CopyTo(arp[8..]);
            ResponderIp.CopyTo(arp[14..]);
            BinaryPrimitives.WriteUInt16BigEndian(arp[6..], 2);
            arp.Slice(18, 6).CopyTo(f);
            ResponderMac.CopyTo(f[6..]);
            return true;
        }
        if (type != 0x0800) return false;
        var ip = f[14..];
        int ihl = (ip[0] & 0xf) * 4;
        if (ihl < 20 || ip[9] != 1 || !ip.Slice(16, 4).SequenceEqual(ResponderIp) || f.Length < 14 + ihl + 8) return false;
        var icmp = ip[ihl..];
        if (icmp[0] != 8) return false;
        icmp[0] = 0;
        // type 8 → 0 lowers the one's-complement sum by 0x0800: add it back to the checksum
        uint sum = (uint)BinaryPrimitives.ReadUInt16BigEndian(icmp[2..]) + 0x0800;
        sum = (sum & 0xffff) + (sum >> 16);
        BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], (ushort)sum);
        Span<byte> t = stackalloc byte[4];
        ip.Slice(12, 4).CopyTo(t);
        ip.Slice(16, 4).CopyTo(ip[12..]);
        t.CopyTo(ip[16..]);
        f.Slice(6, 6).CopyTo(f);
        ResponderMac.CopyTo(f[6..]);
        return true;
    }
}
