# Guest side: waits for virtio_crypto to register cbc(aes) (the kernel self-tests it through the device first), prints
# its /proc/crypto entry and passes when the self-test passed.
i=0
while ! grep -q 'virtio_crypto_aes_cbc' /proc/crypto && [ $i -lt 90 ]; do sleep 1; i=$((i+1)); done
grep -B1 -A5 'driver.*virtio_crypto_aes_cbc' /proc/crypto
grep -A5 'driver.*virtio_crypto_aes_cbc' /proc/crypto | grep -q 'selftest.*: passed'
