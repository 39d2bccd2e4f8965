// libcrypto from OpenSSL 3 (apt: libssl-dev): SHA-256, HMAC-SHA256 and constant-time compare.
#pragma once
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/crypto.h>
