package targets

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkParse1M parses a fleet of a million servers in each format.
func BenchmarkParse1M(b *testing.B) {
	const n = 1_000_000
	for _, format := range []Format{Lines, CSV, JSON} {
		b.Run(format.String(), func(b *testing.B) {
			in := fleet(format, n)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				ts, err := Parse(bytes.NewReader(in), Auto)
				if err != nil || len(ts) != n {
					b.Fatalf("Parse: %d targets, %v", len(ts), err)
				}
			}
		})
	}
}

// fleet renders n distinct 32-hex server ids in format f.
func fleet(f Format, n int) []byte {
	var buf bytes.Buffer
	switch f {
	case CSV:
		buf.WriteString("server_id,keypair_name\n")
	case JSON:
		buf.WriteByte('[')
	}
	for i := range n {
		switch f {
		case Lines:
			fmt.Fprintf(&buf, "%032x\n", i)
		case CSV:
			fmt.Fprintf(&buf, "%032x,kp-%d\n", i, i%3)
		case JSON:
			if i > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, `{"server_id":"%032x"}`, i)
		}
	}
	if f == JSON {
		buf.WriteByte(']')
	}
	return buf.Bytes()
}
