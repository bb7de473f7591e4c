/*
 * WinZip AES (AE-2) entry encryption with OpenSSL, the format 7-Zip,
 * WinZip, libzip and ClickHouse (minizip-ng) read:
 *
 *   entry data = salt (8/12/16 bytes) | password verifier (2) |
 *                AES-CTR ciphertext | HMAC-SHA1 authentication code (10)
 *
 * Keys: PBKDF2-HMAC-SHA1(password, salt, 1000 iterations) gives the AES
 * key, the HMAC key and the 2-byte verifier, in that order. The CTR counter
 * is a little-endian 64-bit block number starting at 1 (Gladman's
 * fileenc), which OpenSSL's big-endian CTR mode cannot express, so the
 * keystream is AES-ECB of counter blocks made here in batches: AES-NI runs
 * that at several GB/s. The MAC covers the ciphertext.
 *
 * A context is used by one thread at a time; contexts are independent.
 */
#ifndef CHB_AES_H
#define CHB_AES_H

#include "chb_error.h"

#include <stddef.h>
#include <stdint.h>

#define CHB_AES_MAC_LEN 10
#define CHB_AES_PV_LEN 2
#define CHB_AES_SALT_MAX 16

/* strength: 1, 2, 3 for AES-128/192/256 (the byte in the 0x9901 field) */
size_t chb_aes_salt_len(int strength);
/* Bytes added to an entry: salt + verifier + MAC. */
size_t chb_aes_overhead(int strength);

/* PBKDF2-HMAC-SHA1 (RFC 8018), the WinZip AES key derivation. */
void chb_pbkdf2_sha1(const char *password, size_t password_len, const unsigned char *salt,
                     size_t salt_len, unsigned iterations, unsigned char *out, size_t out_len);

typedef struct chb_aes chb_aes;

/*
 * Encryption with a fresh random salt: `header` receives salt + verifier
 * (chb_aes_salt_len + 2 bytes), to be written before the ciphertext.
 */
chb_aes *chb_aes_encrypter(int strength, const char *password, size_t password_len,
                           unsigned char *header, chb_error *err);
/*
 * Decryption from an entry's salt + verifier. A verifier that does not
 * match is CHB_AUTH ("wrong password"); `what` names the entry in it.
 */
chb_aes *chb_aes_decrypter(int strength, const char *password, size_t password_len,
                           const unsigned char *header, const char *what, chb_error *err);

/* Encrypts in place and feeds the MAC (encrypter). */
int chb_aes_encrypt(chb_aes *a, unsigned char *buf, size_t len, chb_error *err);
/* Feeds the MAC and decrypts in place (decrypter). */
int chb_aes_decrypt(chb_aes *a, unsigned char *buf, size_t len, chb_error *err);
/* Only feeds the MAC (to check a damaged entry's MAC without decrypting). */
int chb_aes_mac_update(chb_aes *a, const unsigned char *buf, size_t len, chb_error *err);
/* The 10-byte authentication code of everything so far; ends the MAC. */
int chb_aes_mac(chb_aes *a, unsigned char mac[CHB_AES_MAC_LEN], chb_error *err);

/* Wipes the keys; accepts NULL. */
void chb_aes_free(chb_aes *a);

#endif
