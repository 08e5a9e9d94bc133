using Microsoft.Win32.SafeHandles;

namespace Vhost.Blk;

/// <summary>Where the sectors live. Implementations must be safe to call from several queue workers at once
/// and must not allocate per call: they run on the data path.</summary>
public interface IBlockStorage : IDisposable
{
    long CapacityBytes { get; }
    bool ReadOnly { get; }
    void Read(Span<byte> destination, long offset);
    void Write(ReadOnlySpan<byte> source, long offset);
    /// <summary>Makes completed writes durable: the guest's FLUSH maps here.</summary>
    void Flush();
    void WriteZeroes(long offset, long length);
}

/// <summary>RAM disk in 1 MiB chunks, so sizes beyond 2 GiB work and nothing is committed until touched.</summary>
public sealed class MemoryStorage : IBlockStorage
{
    private const int ChunkShift = 20;
    private const int ChunkSize = 1 << ChunkShift;
    private readonly byte[]?[] _chunks;
    private readonly Lock _grow = new();

    public MemoryStorage(long capacityBytes, bool readOnly = false)
    {
        if (capacityBytes <= 0 || capacityBytes % 512 != 0) throw new ArgumentOutOfRangeException(nameof(capacityBytes), "must be a positive multiple of 512");
        CapacityBytes = capacityBytes;
        ReadOnly = readOnly;
        _chunks = new byte[]?[(capacityBytes + ChunkSize - 1) >> ChunkShift];
    }

    public long CapacityBytes { get; }
    public bool ReadOnly { get; }

    public void Read(Span<byte> destination, long offset)
    {
        while (!destination.IsEmpty)
        {
            int i = (int)(offset >> ChunkShift), o = (int)(offset & (ChunkSize - 1));
            int n = Math.Min(destination.Length, ChunkSize - o);
            var c = Volatile.Read(ref _chunks[i]);
            if (c == null) destination[..n].Clear();
            else c.AsSpan(o, n).CopyTo(destination);
            destination = destination[n..];
            offset += n;
        }
    }

    public void Write(ReadOnlySpan<byte> source, long offset)
    {
        while (!source.IsEmpty)
        {
            int i = (int)(offset >> ChunkShift), o = (int)(offset & (ChunkSize - 1));
            int n = Math.Min(source.Length, ChunkSize - o);
            source[..n].CopyTo(Chunk(i).AsSpan(o, n));
            source = source[n..];
            offset += n;
        }
    }

    public void WriteZeroes(long offset, long length)
    {
        while (length > 0)
        {
            int i = (int)(offset >> ChunkShift), o = (int)(offset & (ChunkSize - 1));
            int n = (int)Math.Min(length, ChunkSize - o);
            Volatile.Read(ref _chunks[i])?.AsSpan(o, n).Clear();
            length -= n;
            offset += n;
        }
    }

    public void Flush() { }

    // A chunk is allocated on first write only (then never again), so steady-state I/O does not allocate.
    private byte[] Chunk(int i)
    {
        var c = Volatile.Read(ref _chunks[i]);
        if (c != null) return c;
        lock (_grow) return _chunks[i] ??= new byte[ChunkSize];
    }

    public void Dispose() { }
}

/// <summary>A regular file or block device, read and written with pread/pwrite (RandomAccess), flushed with fdatasync.</summary>
public sealed class FileStorage : IBlockStorage
{
    private readonly SafeFileHandle _handle;

    public FileStorage(string path, bool readOnly)
    {
        _handle = File.OpenHandle(path, FileMode.Open, readOnly ? FileAccess.Read : FileAccess.ReadWrite, FileShare.ReadWrite);
        ReadOnly = readOnly;
        long len = RandomAccess.GetLength(_handle);
        if (len == 0) len = Vhost.Interop.FileIo.BlockDeviceSize(_handle);
        CapacityBytes = len & ~511L; // a partial last sector cannot be addressed by the guest
        if (CapacityBytes == 0) throw new ArgumentException($"{path}: smaller than one sector");
    }

    public long CapacityBytes { get; }
    public bool ReadOnly { get; }

    public void Read(Span<byte> destination, long offset)
    {
        while (!destination.IsEmpty)
        {
            int n = RandomAccess.Read(_handle, destination, offset);
            if (n <= 0) { destination.Clear(); return; } // past EOF of a sparse/short file reads as zeroes
            destination = destination[n..];
            offset += n;
        }
    }

    public void Write(ReadOnlySpan<byte> source, long offset) => RandomAccess.Write(_handle, source, offset);

    public void WriteZeroes(long offset, long length)
    {
        Span<byte> zero = stackalloc byte[4096];
        zero.Clear();
        while (length > 0)
        {
            int n = (int)Math.Min(length, zero.Length);
            RandomAccess.Write(_handle, zero[..n], offset);
            offset += n;
            length -= n;
        }
    }

    public void Flush() => Vhost.Interop.FileIo.DataSync(_handle);

    public void Dispose() => _handle.Dispose();
}
