/* Guest side: AES-CBC through AF_ALG bound to a driver by name (virtio_crypto_aes_cbc), checked against the NIST
 * SP 800-38A vector and, for buffers of 16 bytes to 64 KiB with random keys, IVs and data, against a software
 * driver (cbc(aes-generic), else cbc-aes-aesni); decrypting must give the data back. Prints one line per size,
 * then "afalg: N sizes ok" and exits 0, or names the first mismatch and exits 1. Built with gcc -static.
 * afalg-cbc DRIVER [SECONDS]: with SECONDS, the NIST key is set (the device's session made) first, "PAUSE-NOW" printed,
 * and the vector run SECONDS later on that session (the host pauses and resumes the VM meanwhile). */
#include <linux/if_alg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

#ifndef SOL_ALG
#define SOL_ALG 279
#endif

static int tfm(const char *driver, const unsigned char *key, int keylen)
{
    struct sockaddr_alg sa = { .salg_family = AF_ALG };
    strcpy((char *)sa.salg_type, "skcipher");
    strncpy((char *)sa.salg_name, driver, sizeof(sa.salg_name) - 1);
    int s = socket(AF_ALG, SOCK_SEQPACKET, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) { if (s >= 0) close(s); return -1; }
    if (setsockopt(s, SOL_ALG, ALG_SET_KEY, key, keylen) < 0) { close(s); return -2; }
    return s;
}

/* one operation: returns 0 when len bytes came back */
static int op(int t, int encrypt, const unsigned char *iv, const unsigned char *in, unsigned char *out, size_t len)
{
    int c = accept(t, NULL, 0);
    if (c < 0) return -1;
    char cbuf[CMSG_SPACE(4) + CMSG_SPACE(sizeof(struct af_alg_iv) + 16)];
    memset(cbuf, 0, sizeof(cbuf));
    struct iovec iov = { .iov_base = (void *)in, .iov_len = len };
    struct msghdr msg = { .msg_control = cbuf, .msg_controllen = sizeof(cbuf), .msg_iov = &iov, .msg_iovlen = 1 };
    struct cmsghdr *h = CMSG_FIRSTHDR(&msg);
    h->cmsg_level = SOL_ALG; h->cmsg_type = ALG_SET_OP; h->cmsg_len = CMSG_LEN(4);
    *(unsigned *)CMSG_DATA(h) = encrypt ? ALG_OP_ENCRYPT : ALG_OP_DECRYPT;
    h = CMSG_NXTHDR(&msg, h);
    h->cmsg_level = SOL_ALG; h->cmsg_type = ALG_SET_IV; h->cmsg_len = CMSG_LEN(sizeof(struct af_alg_iv) + 16);
    struct af_alg_iv *a = (struct af_alg_iv *)CMSG_DATA(h);
    a->ivlen = 16; memcpy(a->iv, iv, 16);
    size_t done = 0;
    if (sendmsg(c, &msg, 0) != (ssize_t)len) { close(c); return -2; }
    while (done < len) {
        ssize_t n = read(c, out + done, len - done);
        if (n <= 0) { close(c); return -3; }
        done += (size_t)n;
    }
    close(c);
    return 0;
}

static void hexto(const char *h, unsigned char *b) { for (; *h; h += 2) sscanf(h, "%2hhx", b++); }

int main(int argc, char **argv)
{
    const char *drv = argc > 1 ? argv[1] : "virtio_crypto_aes_cbc";
    unsigned char key[32], iv[16], pt[64], ct[64], got[64];
    hexto("2b7e151628aed2a6abf7158809cf4f3c", key);
    hexto("000102030405060708090a0b0c0d0e0f", iv);
    hexto("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710", pt);
    hexto("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b273bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7", ct);
    int t = tfm(drv, key, 16);
    if (t < 0) { printf("afalg: cannot bind %s (%d)\n", drv, t); return 1; }
    if (argc > 2) {
        printf("afalg: key set, PAUSE-NOW\n");
        fflush(stdout);
        sleep((unsigned)atoi(argv[2]));
    }
    if (op(t, 1, iv, pt, got, 64) || memcmp(got, ct, 64)) { printf("afalg: NIST F.2.1 encrypt FAILED\n"); return 1; }
    if (op(t, 0, iv, ct, got, 64) || memcmp(got, pt, 64)) { printf("afalg: NIST F.2.1 decrypt FAILED\n"); return 1; }
    close(t);
    printf("afalg: %s NIST SP 800-38A F.2.1 ok\n", drv);
    const char *ref = "cbc(aes-generic)";
    int probe = tfm(ref, key, 16);
    if (probe < 0) { ref = "cbc-aes-aesni"; probe = tfm(ref, key, 16); }
    if (probe < 0) { printf("afalg: no software reference driver\n"); return 1; }
    close(probe);
    int fd = open("/dev/urandom", O_RDONLY);
    size_t max = 65536;
    unsigned char *in = malloc(max), *a = malloc(max), *b = malloc(max), *back = malloc(max);
    int sizes = 0;
    for (size_t len = 16; len <= max; len = len < 256 ? len + 16 : len * 2) {
        int keylen = 16 + 8 * (sizes % 3);
        if (read(fd, key, 32) != 32 || read(fd, iv, 16) != 16 || read(fd, in, len) != (ssize_t)len) return 1;
        int v = tfm(drv, key, keylen), r = tfm(ref, key, keylen);
        if (v < 0 || r < 0) { printf("afalg: bind failed at %zu\n", len); return 1; }
        int e1 = op(v, 1, iv, in, a, len), e2 = op(r, 1, iv, in, b, len), e3 = op(v, 0, iv, a, back, len);
        if (e1 || e2 || e3) { printf("afalg: %zu bytes: operation failed (%d %d %d)\n", len, e1, e2, e3); return 1; }
        if (memcmp(a, b, len)) { printf("afalg: %zu bytes AES-%d: %s and %s differ\n", len, keylen * 8, drv, ref); return 1; }
        if (memcmp(back, in, len)) { printf("afalg: %zu bytes AES-%d: decrypt did not give the data back\n", len, keylen * 8); return 1; }
        printf("afalg: %zu bytes AES-%d ok (same as %s)\n", len, keylen * 8, ref);
        close(v); close(r);
        sizes++;
    }
    printf("afalg: %d sizes ok\n", sizes);
    return 0;
}
