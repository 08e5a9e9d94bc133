# Guest side: waits for virtio_crypto's cbc(aes), then runs the AF_ALG program (guest-tools/afalg-cbc.c) against driver virtio_crypto_aes_cbc.
i=0
while ! grep -q 'virtio_crypto_aes_cbc' /proc/crypto && [ $i -lt 90 ]; do sleep 1; i=$((i+1)); done
/bin/afalg-cbc virtio_crypto_aes_cbc
