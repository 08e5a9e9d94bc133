using Vhost.Interop;

namespace Vhost.Blk;

/// <summary>
/// What a virtio-blk device stores its blocks in. Methods return 0 or an errno and never throw: they
/// run on the data path, possibly on several threads at once for different ranges.
/// </summary>
public interface IBlockStorage : IDisposable
{
    /// <summary>Size in bytes, a multiple of 512.</summary>
    long Capacity { get; }

    /// <summary>Whether writes are refused.</summary>
    bool IsReadOnly { get; }

    /// <summary>Blocking I/O that may take long (disk, network): run it off the queue thread.</summary>
    bool IsSlow { get; }

    /// <summary>A short identity for GET_ID (up to 20 bytes of it are used).</summary>
    string Serial { get; }

    /// <summary>Fills <paramref name="destination"/> from <paramref name="offset"/>; 0 or an errno.</summary>
    int Read(long offset, NativeWindow destination);

    /// <summary>Stores <paramref name="source"/> at <paramref name="offset"/>; 0 or an errno.</summary>
    int Write(long offset, NativeWindow source);

    /// <summary>Makes every completed write durable.</summary>
    int Flush();

    /// <summary>The range's content no longer matters; reads may return old data or zeros.</summary>
    int Discard(long offset, long length);

    /// <summary>The range reads as zeros afterwards.</summary>
    int WriteZeroes(long offset, long length, bool mayUnmap);
}
