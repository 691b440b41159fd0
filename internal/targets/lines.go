package targets

import (
	"bufio"
	"bytes"
	"io"
)

// lines reads one server id per line. Blank lines and everything from a
// '#' on are ignored ('#' cannot be part of an id), surrounding whitespace
// and a CR before the LF are dropped.
func (p *parser) lines(br *bufio.Reader) error {
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			p.problem(n, "longer than %d bytes", MaxLineBytes)
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
		} else {
			if i := bytes.IndexByte(line, '#'); i >= 0 {
				line = line[:i]
			}
			if line = bytes.TrimSpace(line); len(line) > 0 {
				p.add(n, Target{ServerID: string(line)})
			}
		}
		switch err {
		case nil:
		case io.EOF:
			return nil
		default:
			return err
		}
	}
}
