package targets

import (
	"bufio"
	"strings"
)

func bufioReader(s string) *bufio.Reader {
	return bufio.NewReaderSize(strings.NewReader(s), MaxLineBytes)
}
