/*
 * Per-file authenticated encryption of directory backups (chbackup's own
 * format, README "Encrypted directory backups"), with OpenSSL:
 *
 *   file  = "CHBENC1\0" | base nonce (12 random bytes) | chunk...
 *   chunk = AES-256-GCM(plaintext of up to 64 KiB) | tag (16)
 *
 * Every chunk but the last holds exactly 64 KiB of plaintext; the last one
 * holds 0..64 KiB (an empty file is one empty final chunk). Chunk i uses
 * the nonce base XOR i (big-endian, in the last 8 bytes) and the AAD
 * name | i (8 bytes, big-endian) | final (1 byte), where `name` is the
 * file's name inside its backup: a flipped bit, a truncated, extended or
 * reordered file, and two files swapped are all authentication failures
 * (CHB_CORRUPT naming the file).
 *
 * The 32-byte key comes from the password with scrypt (chb_cipher_derive_key).
 * A sealer or an opener is used by one thread at a time; each owns one
 * chunk-sized buffer. All of them wipe their key copy when freed.
 */
#ifndef CHB_CIPHER_H
#define CHB_CIPHER_H

#include "chb_error.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CHB_CIPHER_KEY_LEN 32
#define CHB_CIPHER_CHUNK 65536
#define CHB_CIPHER_TAG_LEN 16
#define CHB_CIPHER_NONCE_LEN 12
#define CHB_CIPHER_MAGIC "CHBENC1"   /* 8 bytes with its NUL */
#define CHB_CIPHER_HEADER_LEN (8 + CHB_CIPHER_NONCE_LEN)

/*
 * scrypt (EVP_PBE_scrypt): n a power of two in [2, 2^22], r in [1, 64],
 * p in [1, 64]; writes outlen bytes to out. Returns 0, or -1 with err set
 * (CHB_INVALID for bad parameters, CHB_CRYPTO otherwise).
 */
int chb_cipher_derive_key(const char *password, size_t password_len,
                          const unsigned char *salt, size_t salt_len,
                          uint64_t n, uint64_t r, uint64_t p,
                          unsigned char *out, size_t outlen, chb_error *err);

/* n bytes from OpenSSL's CSPRNG (salts). Returns 0, or -1 with err set. */
int chb_cipher_random(unsigned char *out, size_t n, chb_error *err);

/* Size on disk of a file of `plain` bytes. */
uint64_t chb_cipher_sealed_size(uint64_t plain);
/* Plaintext size of a sealed file of `sealed` bytes; -1 if no file has it. */
int chb_cipher_plain_size(uint64_t sealed, uint64_t *plain);

/* ---- writing: plaintext in, sealed file out (to a file descriptor) ---- */

typedef struct chb_sealer chb_sealer;

/*
 * A sealer for one file named `name` in its backup (copied), writing to fd
 * (not owned); `what` (copied) names the file in errors. The header is
 * written by the first write or by finish.
 */
chb_sealer *chb_sealer_new(const unsigned char key[CHB_CIPHER_KEY_LEN], const char *name,
                           int fd, const char *what, chb_error *err);
int chb_sealer_write(chb_sealer *s, const void *buf, size_t len, chb_error *err);
/* Seals and writes the final chunk. Returns 0, or -1 with err set. */
int chb_sealer_finish(chb_sealer *s, chb_error *err);
/* Wipes and frees; accepts NULL. */
void chb_sealer_free(chb_sealer *s);

/* ---- reading: a sealed file, decrypted and verified chunk by chunk ---- */

typedef struct chb_opener chb_opener;

/* Opens `path` (the file named `name` in its backup; both copied), confined
 * below its first root_len bytes as chb_fs_open_beneath does (0: not). */
chb_opener *chb_opener_open(const char *path, size_t root_len, const unsigned char key[CHB_CIPHER_KEY_LEN],
                            const char *name, chb_error *err);
/* Plaintext size, from the file's size. */
uint64_t chb_opener_size(const chb_opener *o);
/* Positions at a plaintext offset (only chunks from there are read). */
int chb_opener_seek(chb_opener *o, uint64_t offset, chb_error *err);
/* Up to len plaintext bytes; 0 at the end; -1 with err set (CHB_CORRUPT
 * when a chunk does not authenticate). */
ssize_t chb_opener_read(chb_opener *o, void *buf, size_t len, chb_error *err);
void chb_opener_close(chb_opener *o);

/* ---- in memory (small files and the password check block) ---- */

/* Seals len bytes into out (chb_cipher_sealed_size(len) bytes). */
int chb_cipher_seal_buffer(const unsigned char key[CHB_CIPHER_KEY_LEN], const char *name,
                           const void *in, size_t len, unsigned char *out, chb_error *err);
/* Opens a sealed buffer into out (chb_cipher_plain_size bytes); `what`
 * names it in errors. */
int chb_cipher_open_buffer(const unsigned char key[CHB_CIPHER_KEY_LEN], const char *name,
                           const unsigned char *in, size_t len, unsigned char *out,
                           const char *what, chb_error *err);

#endif
