-- rcnlog_crypto.lua: AES-256 and AES-GCM for the generated rcnlog dissector.
-- tools/gen_lua_dissector.py inlines this file into the script it writes; it is not
-- loaded on its own. Pure Lua 5.2 with bit32 (Wireshark 4.0). No key is ever printed.
--
-- AES-256 (FIPS-197) encryption of one block with T-tables computed when the script loads;
-- GCM (NIST SP 800-38D) with a 96-bit nonce: J0 = nonce || 1 masks the tag, the data is
-- AES-CTR from inc32(J0) = nonce || 2; GHASH with Shoup's 4-bit tables. The script's
-- head defines AAD_MASK and AAD_CONST (logentry.e2e_aad as header & mask | const).

local band, bor, bxor = bit32.band, bit32.bor, bit32.bxor
local lshift, rshift, rrotate = bit32.lshift, bit32.rshift, bit32.rrotate

local SBOX, TE0, TE1, TE2, TE3 = {}, {}, {}, {}, {}
do
    local function rol8(x, n) return band(bor(lshift(x, n), rshift(x, 8 - n)), 0xFF) end
    local function xtime(x) return band(bxor(lshift(x, 1), band(x, 0x80) ~= 0 and 0x1B or 0), 0xFF) end
    local p, q = 1, 1
    repeat                          -- p runs over GF(2^8)* by powers of 3, q = 1/p
        p = bxor(p, xtime(p))
        q = bxor(q, lshift(q, 1)); q = bxor(q, lshift(q, 2)); q = bxor(q, lshift(q, 4))
        q = band(q, 0xFF)
        if band(q, 0x80) ~= 0 then q = bxor(q, 0x09) end
        SBOX[p] = bxor(q, rol8(q, 1), rol8(q, 2), rol8(q, 3), rol8(q, 4), 0x63)
    until p == 1
    SBOX[0] = 0x63
    for x = 0, 255 do
        local s = SBOX[x]
        local s2 = xtime(s)
        local w = bor(lshift(s2, 24), lshift(s, 16), lshift(s, 8), bxor(s2, s))
        TE0[x], TE1[x], TE2[x], TE3[x] = w, rrotate(w, 8), rrotate(w, 16), rrotate(w, 24)
    end
end

local function sub_word(w)
    return bor(lshift(SBOX[rshift(w, 24)], 24), lshift(SBOX[band(rshift(w, 16), 0xFF)], 16),
               lshift(SBOX[band(rshift(w, 8), 0xFF)], 8), SBOX[band(w, 0xFF)])
end

-- the 60 round-key words of AES-256 from a 32-byte key string
local function aes256_expand(key)
    local w, rcon = {}, 1
    for i = 0, 7 do
        local a, b, c, d = key:byte(4 * i + 1, 4 * i + 4)
        w[i] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
    end
    for i = 8, 59 do
        local t = w[i - 1]
        if i % 8 == 0 then
            t = bxor(sub_word(bit32.lrotate(t, 8)), lshift(rcon, 24))
            rcon = band(bxor(lshift(rcon, 1), rcon >= 0x80 and 0x1B or 0), 0xFF)
        elseif i % 8 == 4 then
            t = sub_word(t)
        end
        w[i] = bxor(w[i - 8], t)
    end
    return w
end

-- encrypt the block (s0, s1, s2, s3), big-endian words, with round keys w
local function aes256_block(w, s0, s1, s2, s3)
    s0, s1, s2, s3 = bxor(s0, w[0]), bxor(s1, w[1]), bxor(s2, w[2]), bxor(s3, w[3])
    for r = 4, 52, 4 do
        s0, s1, s2, s3 =
            bxor(TE0[rshift(s0, 24)], TE1[band(rshift(s1, 16), 0xFF)],
                 TE2[band(rshift(s2, 8), 0xFF)], TE3[band(s3, 0xFF)], w[r]),
            bxor(TE0[rshift(s1, 24)], TE1[band(rshift(s2, 16), 0xFF)],
                 TE2[band(rshift(s3, 8), 0xFF)], TE3[band(s0, 0xFF)], w[r + 1]),
            bxor(TE0[rshift(s2, 24)], TE1[band(rshift(s3, 16), 0xFF)],
                 TE2[band(rshift(s0, 8), 0xFF)], TE3[band(s1, 0xFF)], w[r + 2]),
            bxor(TE0[rshift(s3, 24)], TE1[band(rshift(s0, 16), 0xFF)],
                 TE2[band(rshift(s1, 8), 0xFF)], TE3[band(s2, 0xFF)], w[r + 3])
    end
    local function last(a, b, c, d, k)
        return bxor(bor(lshift(SBOX[rshift(a, 24)], 24), lshift(SBOX[band(rshift(b, 16), 0xFF)], 16),
                        lshift(SBOX[band(rshift(c, 8), 0xFF)], 8), SBOX[band(d, 0xFF)]), k)
    end
    return last(s0, s1, s2, s3, w[56]), last(s1, s2, s3, s0, w[57]),
           last(s2, s3, s0, s1, w[58]), last(s3, s0, s1, s2, w[59])
end

-- AES-GCM's decryption without the tag: CTR mode from nonce || 2 (a 12-byte nonce)
local function gcm_ctr(w, nonce, data)
    local n0, n1, n2 = 0, 0, 0
    do
        local b = { nonce:byte(1, 12) }
        n0 = bor(lshift(b[1], 24), lshift(b[2], 16), lshift(b[3], 8), b[4])
        n1 = bor(lshift(b[5], 24), lshift(b[6], 16), lshift(b[7], 8), b[8])
        n2 = bor(lshift(b[9], 24), lshift(b[10], 16), lshift(b[11], 8), b[12])
    end
    local out, counter = {}, 2
    for at = 1, #data, 16 do
        local k0, k1, k2, k3 = aes256_block(w, n0, n1, n2, counter)
        counter = band(counter + 1, 0xFFFFFFFF)
        local ks = {}
        for j, word in ipairs({ k0, k1, k2, k3 }) do
            ks[4 * j - 3], ks[4 * j - 2] = rshift(word, 24), band(rshift(word, 16), 0xFF)
            ks[4 * j - 1], ks[4 * j] = band(rshift(word, 8), 0xFF), band(word, 0xFF)
        end
        local chunk = { data:byte(at, math.min(at + 15, #data)) }
        for i = 1, #chunk do chunk[i] = bxor(chunk[i], ks[i]) end
        out[#out + 1] = string.char(table.unpack(chunk))
    end
    return table.concat(out)
end

-- GHASH (SP 800-38D 6.4) with Shoup's 4-bit tables: M[i] = i * H, 128-bit values as four
-- big-endian words; REM4 reduces the 4 bits shifted out
local REM4 = { [0] = 0x0000, 0x1C20, 0x3840, 0x2460, 0x7080, 0x6CA0, 0x48C0, 0x54E0,
               0xE100, 0xFD20, 0xD940, 0xC560, 0x9180, 0x8DA0, 0xA9C0, 0xB5E0 }

local function ghash_tables(h0, h1, h2, h3)
    local m = { [0] = { 0, 0, 0, 0 }, [8] = { h0, h1, h2, h3 } }
    for _, i in ipairs({ 4, 2, 1 }) do
        local r = band(h3, 1) ~= 0 and 0xE1000000 or 0
        h3 = bor(rshift(h3, 1), lshift(h2, 31))
        h2 = bor(rshift(h2, 1), lshift(h1, 31))
        h1 = bor(rshift(h1, 1), lshift(h0, 31))
        h0 = bxor(rshift(h0, 1), r)
        m[i] = { h0, h1, h2, h3 }
    end
    for _, i in ipairs({ 2, 4, 8 }) do
        for j = 1, i - 1 do
            local a, b = m[i], m[j]
            m[i + j] = { bxor(a[1], b[1]), bxor(a[2], b[2]), bxor(a[3], b[3]), bxor(a[4], b[4]) }
        end
    end
    return m
end

-- (x0..x3) * H, a nibble at a time from the last byte (mbedTLS's gcm_mult; its first
-- step, z = M[low nibble of byte 15], is the shift of z = 0 followed by that xor)
local function gmult(m, x0, x1, x2, x3)
    local x = { [0] = x0, x1, x2, x3 }
    local z0, z1, z2, z3 = 0, 0, 0, 0
    for i = 15, 0, -1 do
        local byte = band(rshift(x[rshift(i, 2)], 24 - 8 * (i % 4)), 0xFF)
        for _, nibble in ipairs({ band(byte, 0xF), rshift(byte, 4) }) do
            local rem = band(z3, 0xF)
            z3 = bor(rshift(z3, 4), lshift(z2, 28))
            z2 = bor(rshift(z2, 4), lshift(z1, 28))
            z1 = bor(rshift(z1, 4), lshift(z0, 28))
            z0 = bxor(rshift(z0, 4), lshift(REM4[rem], 16))
            local t = m[nibble]
            z0, z1, z2, z3 = bxor(z0, t[1]), bxor(z1, t[2]), bxor(z2, t[3]), bxor(z3, t[4])
        end
    end
    return z0, z1, z2, z3
end

-- fold ``data`` (zero-padded to 16 bytes) into the GHASH state y
local function ghash(m, y, data)
    for at = 1, #data, 16 do
        local b = { data:byte(at, at + 15) }
        for k = #b + 1, 16 do b[k] = 0 end
        local w = {}
        for k = 0, 3 do
            w[k] = bor(lshift(b[4 * k + 1], 24), lshift(b[4 * k + 2], 16), lshift(b[4 * k + 3], 8),
                       b[4 * k + 4])
        end
        y[1], y[2], y[3], y[4] = gmult(m, bxor(y[1], w[0]), bxor(y[2], w[1]), bxor(y[3], w[2]),
                                       bxor(y[4], w[3]))
    end
end

-- whether ``tag`` is AES-GCM's over (aad, ciphertext) with key k = { w = round keys, m = tables }
local function gcm_tag_ok(k, nonce, aad, ciphertext, tag)
    local y = { 0, 0, 0, 0 }
    ghash(k.m, y, aad)
    ghash(k.m, y, ciphertext)
    y[1], y[2], y[3], y[4] = gmult(k.m, y[1], bxor(y[2], #aad * 8), y[3], bxor(y[4], #ciphertext * 8))
    local b = { nonce:byte(1, 12) }
    local e = { aes256_block(k.w, bor(lshift(b[1], 24), lshift(b[2], 16), lshift(b[3], 8), b[4]),
                             bor(lshift(b[5], 24), lshift(b[6], 16), lshift(b[7], 8), b[8]),
                             bor(lshift(b[9], 24), lshift(b[10], 16), lshift(b[11], 8), b[12]), 1) }
    for k2 = 1, 4 do
        local want = bxor(y[k2], e[k2])
        local a1, a2, a3, a4 = tag:byte(4 * k2 - 3, 4 * k2)
        if want ~= bor(lshift(a1, 24), lshift(a2, 16), lshift(a3, 8), a4) then return false end
    end
    return true
end

-- the end-to-end seal's associated data from the entry's header (logentry.e2e_aad)
local function e2e_aad(header)
    local out = {}
    for i = 1, #header do
        out[i] = string.char(bor(band(header:byte(i), AAD_MASK[i]), AAD_CONST[i]))
    end
    return table.concat(out)
end
