# Guest side: as crypto-afalg.sh, but the NIST session is made first and used 8 s later: the host stops and
# continues the VM (QMP) after PAUSE-NOW, so the session must outlive the ring's stop and restart.
i=0
while ! grep -q 'virtio_crypto_aes_cbc' /proc/crypto && [ $i -lt 90 ]; do sleep 1; i=$((i+1)); done
/bin/afalg-cbc virtio_crypto_aes_cbc 8
