package wsframe

import "encoding/binary"

// Frame header bits of the base framing protocol, RFC 6455 §5.2.
const (
	finBit  byte = 0x80 // byte 0: the frame is the final fragment of its message
	maskBit byte = 0x80 // byte 1: the payload is masked and a masking key follows the length
)

// CloseGoingAway is the status code of an endpoint that is going away, such
// as a server going down (RFC 6455 §7.4.1).
const CloseGoingAway uint16 = 1001

// AppendClose appends a Close frame (RFC 6455 §5.5.1) whose payload is the
// status code alone, and returns the extended buffer.
//
// mask is nil for a frame to the client, which is never masked, and the
// masking key for a frame to the server, which must be masked with a fresh
// key from a strong source of entropy (RFC 6455 §5.3). It does not allocate
// when dst has room for the frame: 4 bytes, 8 when masked.
func AppendClose(dst []byte, code uint16, mask *[4]byte) []byte {
	var payload [2]byte
	binary.BigEndian.PutUint16(payload[:], code)
	return appendControl(dst, OpClose, payload[:], mask)
}

// AppendPing appends a Ping frame (RFC 6455 §5.5.2) carrying payload and
// returns the extended buffer. mask is as for [AppendClose]. It panics when
// payload is longer than a control frame may carry, 125 bytes (RFC 6455
// §5.5). It does not allocate when dst has room for the frame: 2 bytes plus
// the payload, 4 more when masked.
func AppendPing(dst, payload []byte, mask *[4]byte) []byte {
	return appendControl(dst, OpPing, payload, mask)
}

// appendControl appends a control frame: final (control frames are never
// fragmented, RFC 6455 §5.5), no reserved bits, a 7-bit length (§5.2) and,
// when mask is set, the masking key and the masked payload (§5.3).
func appendControl(dst []byte, op Opcode, payload []byte, mask *[4]byte) []byte {
	if len(payload) > maxControlPayload {
		panic("wsframe: control frame payload longer than 125 bytes")
	}
	length := byte(len(payload))
	if mask == nil {
		dst = append(dst, finBit|byte(op), length)
		return append(dst, payload...)
	}
	dst = append(dst, finBit|byte(op), maskBit|length, mask[0], mask[1], mask[2], mask[3])
	at := len(dst)
	dst = append(dst, payload...)
	maskBytes(dst[at:], dst[at:], *mask, 0)
	return dst
}
