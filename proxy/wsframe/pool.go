package wsframe

import (
	"encoding/binary"
	"math/bits"
	"sync"
)

// prefixBuf is a pooled prefix buffer. The pools hold pointers so that Put
// does not allocate.
type prefixBuf struct{ b []byte }

// prefixPools[c] holds buffers of capacity 1<<c: parsers with different
// limits share buffers of the same size class.
var prefixPools [bits.UintSize]sync.Pool

func getPrefix(limit int) *prefixBuf {
	c := bits.Len(uint(limit - 1))
	if pb, _ := prefixPools[c].Get().(*prefixBuf); pb != nil {
		return pb
	}
	return &prefixBuf{b: make([]byte, 0, 1<<c)}
}

func putPrefix(pb *prefixBuf) {
	pb.b = pb.b[:0]
	prefixPools[bits.Len(uint(cap(pb.b)-1))].Put(pb)
}

var ctlPool = sync.Pool{New: func() any { return new([maxControlPayload]byte) }}

func getCtl() *[maxControlPayload]byte { return ctlPool.Get().(*[maxControlPayload]byte) }

// maskCopy copies src to dst, unmasking it when h is masked; pos is the
// offset of src[0] in the frame's payload.
func maskCopy(dst, src []byte, h *Header, pos int) {
	if !h.Masked {
		copy(dst, src)
		return
	}
	maskBytes(dst, src, h.MaskKey, pos)
}

// maskBytes sets dst[i] = src[i] ^ key[(pos+i)%4] for i < len(src).
// See https://tools.ietf.org/html/rfc6455#section-5.3.
func maskBytes(dst, src []byte, key [4]byte, pos int) {
	dst = dst[:len(src)]
	// Rotate the key so that its first byte applies to src[0], then work a
	// word at a time.
	k := bits.RotateLeft32(binary.LittleEndian.Uint32(key[:]), -8*(pos&3))
	k64 := uint64(k)<<32 | uint64(k)
	i := 0
	for ; len(src)-i >= 8; i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(src[i:])^k64)
	}
	for ; i < len(src); i++ {
		dst[i] = src[i] ^ byte(k)
		k = bits.RotateLeft32(k, -8)
	}
}
