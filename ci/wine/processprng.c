/* Test set-up only: Wine 8.0 has no bcryptprimitives.dll, whose ProcessPrng every Rust
 * program for Windows imports since Rust 1.78 (std's random numbers). Real Windows 10
 * and 11 have it. This stand-in, put in the test Wine prefix by ci/windows.sh, answers
 * with BCryptGenRandom, which Wine has. */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    return BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, (ULONG)len, BCRYPT_USE_SYSTEM_PREFERRED_RNG));
}
