"""The fscrypt ioctls of a cage volume, as fscryptctl does them.

fscryptctl is not packaged in Debian bookworm. This file runs on the host under python3
(stdlib only): the volume scripts carry its text in the variable FSCRYPT_PY and run it
with `python3 -c`, then COMMAND ARGS. Commands: `identifier` (key on stdin),
`add_key MNT` (key on stdin), `set_policy ID DIR`, `get_policy DIR` (exit 3: not
encrypted), `remove_key ID MNT`. Keys arrive on stdin as base64 text, never in argv;
nothing prints a key.
"""

import base64
import binascii
import errno
import fcntl
import hashlib
import hmac
import os
import struct
import sys

SET_POLICY, GET_POLICY_EX = 0x800C6613, 0xC0096616
ADD_KEY, REMOVE_KEY_ALL_USERS = 0xC0506617, 0xC0406619
SPEC_IDENTIFIER, POLICY_V2 = 2, 2
AES_256_XTS, AES_256_CTS, PAD_32 = 1, 4, 0x03
REMOVAL_FILES_BUSY = 0x1
KEY_BYTES = 64
BUSY = "files of the volume are still in use; the key is only partly removed"


def fail(message, code=1):
    sys.stderr.write("fscrypt: " + message + "\n")
    sys.exit(code)


def read_key():
    try:
        text = sys.stdin.buffer.read().strip()
        key = bytearray(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        fail("the key on stdin is not base64")
    if len(key) != KEY_BYTES:
        fail(f"the key on stdin must be {KEY_BYTES} bytes")
    return key


def identifier(key):
    # The kernel's key identifier: HKDF-SHA512(key), info "fscrypt\0" + context 1,
    # 16 bytes.
    prk = hmac.new(bytes(64), bytes(key), hashlib.sha512).digest()
    return hmac.new(prk, b"fscrypt\0\x01\x01", hashlib.sha512).digest()[:16]


def ioctl(path, request, buf, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        fcntl.ioctl(fd, request, buf, True)
    finally:
        os.close(fd)


def key_identifier(hex_id):
    try:
        raw = bytes.fromhex(hex_id)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        fail("bad key identifier")
    return raw


def spec(hex_id):
    return struct.pack("=II16s16x", SPEC_IDENTIFIER, 0, key_identifier(hex_id))


def run(command, args):
    if command == "identifier":
        print(identifier(read_key()).hex())
    elif command == "add_key":
        key = read_key()
        head = struct.pack("=II32sII32x", SPEC_IDENTIFIER, 0, b"", KEY_BYTES, 0)
        buf = bytearray(head) + key
        try:
            ioctl(args[0], ADD_KEY, buf)
            print(bytes(buf[8:24]).hex())
        finally:
            key[:] = bytes(len(key))
            buf[:] = bytes(len(buf))
    elif command == "set_policy":
        key_id = key_identifier(args[0])
        modes = (POLICY_V2, AES_256_XTS, AES_256_CTS, PAD_32)
        policy = struct.pack("=BBBB4x16s", *modes, key_id)
        ioctl(args[1], SET_POLICY, bytearray(policy), directory=True)
    elif command == "get_policy":
        buf = bytearray(struct.pack("=Q", 24) + bytes(24))
        try:
            ioctl(args[0], GET_POLICY_EX, buf)
        except OSError as e:
            if e.errno == errno.ENODATA:
                fail(f"{args[0]} is not encrypted", 3)
            raise
        if buf[8] != POLICY_V2:
            fail(f"{args[0]} has an fscrypt policy of version {buf[8]}, not 2")
        print(bytes(buf[16:32]).hex())
    elif command == "remove_key":
        buf = bytearray(spec(args[0]) + bytes(24))
        try:
            ioctl(args[1], REMOVE_KEY_ALL_USERS, buf)
        except OSError as e:
            if e.errno != errno.ENOKEY:
                raise
        else:
            if struct.unpack_from("=I", buf, 40)[0] & REMOVAL_FILES_BUSY:
                fail(BUSY)
    else:
        fail("unknown command " + command)


def main():
    command, args = sys.argv[1], sys.argv[2:]
    try:
        run(command, args)
    except OSError as e:
        fail(f"{command}: {os.strerror(e.errno)}")


if __name__ == "__main__":
    main()
