namespace Vhost.Crypto;

/// <summary>Counters of one queue (read while it runs, so every field is touched with Interlocked).</summary>
public sealed class CryptoStats
{
    internal long _requests, _bytes, _failed, _notSupported, _invalidSession, _badMessages;

    /// <summary>Requests answered with any status.</summary>
    public long Requests => Interlocked.Read(ref _requests);

    /// <summary>Source bytes of the requests that succeeded.</summary>
    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>Requests refused for their lengths or layout (VIRTIO_CRYPTO_ERR, or no status byte at all).</summary>
    public long Failed => Interlocked.Read(ref _failed);

    /// <summary>Requests for an operation or algorithm the device does not serve (VIRTIO_CRYPTO_NOTSUPP).</summary>
    public long NotSupported => Interlocked.Read(ref _notSupported);

    /// <summary>Requests naming a session that is not open (VIRTIO_CRYPTO_INVSESS).</summary>
    public long InvalidSession => Interlocked.Read(ref _invalidSession);

    /// <summary>AEAD decryptions whose tag did not match (VIRTIO_CRYPTO_BADMSG).</summary>
    public long BadMessages => Interlocked.Read(ref _badMessages);

    internal void Add(CryptoStats o)
    {
        Interlocked.Add(ref _requests, o.Requests);
        Interlocked.Add(ref _bytes, o.Bytes);
        Interlocked.Add(ref _failed, o.Failed);
        Interlocked.Add(ref _notSupported, o.NotSupported);
        Interlocked.Add(ref _invalidSession, o.InvalidSession);
        Interlocked.Add(ref _badMessages, o.BadMessages);
    }
}
