using System.Buffers.Binary;
using Vhost.Interop;
using Vhost.Protocol;

namespace Vhost.Testing.FrontEnd;

/// <summary>The flags word of a vhost-user header.</summary>
internal static class VhostUserFlags
{
    public const uint VersionMask = 0x3;
    public const uint Version = 0x1;
    public const uint Reply = 1u << 2;
    public const uint NeedReply = 1u << 3;
}

/// <summary>The 12-byte vhost-user header. Fields are raw so tests can put anything in them.</summary>
internal readonly record struct VhostUserHeader(uint Request, uint Flags, uint Size)
{
    public const int Length = 12;

    public uint Version => Flags & VhostUserFlags.VersionMask;

    public bool IsReply => (Flags & VhostUserFlags.Reply) != 0;

    public bool NeedsReply => (Flags & VhostUserFlags.NeedReply) != 0;

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Request);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], Size);
    }

    public byte[] ToArray()
    {
        var b = new byte[Length];
        Write(b);
        return b;
    }

    public static VhostUserHeader Read(ReadOnlySpan<byte> source)
    {
        if (source.Length < Length) throw new ArgumentException("a header is 12 bytes", nameof(source));
        return new VhostUserHeader(
            BinaryPrimitives.ReadUInt32LittleEndian(source),
            BinaryPrimitives.ReadUInt32LittleEndian(source[4..]),
            BinaryPrimitives.ReadUInt32LittleEndian(source[8..]));
    }

    public override string ToString() =>
        $"{(VhostUserRequest)Request} flags 0x{Flags:x} size {Size}";
}

/// <summary>
/// A whole message as read from or written to the socket: header, payload and the fds that came with it.
/// Disposing closes the received fds.
/// </summary>
internal sealed class VhostUserMessage : IDisposable
{
    public VhostUserMessage(VhostUserHeader header, byte[] payload, IReadOnlyList<SafeFd>? fds = null, bool fdsTruncated = false)
    {
        Header = header;
        Payload = payload;
        Fds = fds ?? [];
        FdsTruncated = fdsTruncated;
    }

    public VhostUserHeader Header { get; }

    public VhostUserRequest Request => (VhostUserRequest)Header.Request;

    public byte[] Payload { get; }

    public IReadOnlyList<SafeFd> Fds { get; }

    /// <summary>The sender attached more fds than the receive side has room for; the excess was closed.</summary>
    public bool FdsTruncated { get; }

    /// <summary>Header plus payload as they go on the wire. The size field is <paramref name="payload"/>'s length.</summary>
    public static byte[] Encode(VhostUserRequest request, ReadOnlySpan<byte> payload, bool needReply = false) =>
        Encode((uint)request, VhostUserFlags.Version | (needReply ? VhostUserFlags.NeedReply : 0), payload);

    /// <summary>Encodes with raw request and flags; the size field still matches the payload.</summary>
    public static byte[] Encode(uint request, uint flags, ReadOnlySpan<byte> payload) =>
        EncodeWithSize(request, flags, (uint)payload.Length, payload);

    /// <summary>Encodes with a size field that need not match the bytes that follow (for hostile tests).</summary>
    public static byte[] EncodeWithSize(uint request, uint flags, uint sizeField, ReadOnlySpan<byte> payload)
    {
        var bytes = new byte[VhostUserHeader.Length + payload.Length];
        new VhostUserHeader(request, flags, sizeField).Write(bytes);
        payload.CopyTo(bytes.AsSpan(VhostUserHeader.Length));
        return bytes;
    }

    /// <summary>Splits a complete encoded message; the payload is whatever follows the header.</summary>
    public static VhostUserMessage Decode(ReadOnlySpan<byte> bytes) =>
        new(VhostUserHeader.Read(bytes), bytes[VhostUserHeader.Length..].ToArray());

    public byte[] ToArray() => EncodeWithSize(Header.Request, Header.Flags, Header.Size, Payload);

    public ulong ReadU64() => VhostUserPayload.ReadU64(Payload);

    public void Dispose()
    {
        foreach (var fd in Fds) fd.Dispose();
    }

    public override string ToString() => $"{Header} ({Payload.Length} payload bytes, {Fds.Count} fds)";
}
