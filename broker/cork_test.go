package broker

import (
	"net"
	"testing"
	"time"
)

func TestCorkedConnCoalescesAndClearsDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &corkedConn{Conn: a}
	got := make(chan []byte, 10)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := b.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- append([]byte(nil), buf[:n]...)
		}
	}()
	c.Cork()
	for _, p := range []string{"one ", "two ", "three"} {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Uncork(time.Second); err != nil {
		t.Fatal(err)
	}
	if first := <-got; string(first) != "one two three" {
		t.Fatalf("first read %q: the batch was not written in one write", first)
	}
	// Long after the batch, an uncorked write must not hit a stale deadline.
	time.Sleep(1100 * time.Millisecond)
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatalf("write after the batch's deadline: %v", err)
	}
	if p := <-got; string(p) != "pong" {
		t.Fatalf("got %q", p)
	}
}
