package inventory

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/atomicfile"
	"github.com/ferry-airgap/ferry/internal/smallfile"
)

// SigSuffix names the signature file beside an inventory: FILE.sig holds
// the Ed25519 signature of FILE's exact bytes, base64, one line (as
// BUNDLE.tar.sig does for a bundle's ferry.json).
const SigSuffix = ".sig"

// Write writes inv to path atomically (mode 0644) and, with a signer, its
// signature to path.sig; without one, a stale path.sig is removed. It
// returns the bytes written.
func Write(path string, inv *Inventory, signer bundle.Signer) ([]byte, error) {
	data, err := Marshal(inv)
	if err != nil {
		return nil, fmt.Errorf("encoding inventory: %w", err)
	}
	var sig []byte
	if signer != nil {
		if sig, err = sign(signer, data); err != nil {
			return nil, err
		}
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return nil, fmt.Errorf("writing inventory: %w", err)
	}
	if sig == nil {
		if err := os.Remove(path + SigSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("removing stale signature: %w", err)
		}
		return data, nil
	}
	line := base64.StdEncoding.EncodeToString(sig) + "\n"
	if err := atomicfile.WriteFile(path+SigSuffix, []byte(line), 0o644); err != nil {
		return nil, fmt.Errorf("writing inventory signature: %w", err)
	}
	return data, nil
}

func sign(s bundle.Signer, data []byte) ([]byte, error) {
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("signing inventory: only Ed25519 keys are supported, not %T", s.Public())
	}
	sig, err := s.Sign(rand.Reader, data, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("signing inventory: %w", err)
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, data, sig) {
		return nil, errors.New("signing inventory: the signer returned a signature that does not verify")
	}
	return sig, nil
}

// Read reads and parses the inventory at path. With trusted keys, path.sig
// must hold a signature of the file's exact bytes by one of them; an
// unsigned or tampered inventory is refused before it is parsed. Every
// error about the file's content wraps ErrInvalid and names the file.
func Read(path string, trust []bundle.TrustedKey) (*Inventory, error) {
	data, err := readLimited(path, MaxSize)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrInvalid, path, err)
	}
	if len(trust) > 0 {
		if err := Verify(path, data, trust); err != nil {
			return nil, err
		}
	}
	inv, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("inventory %s: %w", path, err)
	}
	return inv, nil
}

// Verify checks that path.sig holds a signature of data by one of trust.
func Verify(path string, data []byte, trust []bundle.TrustedKey) error {
	keys := make([]string, len(trust))
	for i, k := range trust {
		keys[i] = k.Name
	}
	who := strings.Join(keys, " or ")
	raw, err := readLimited(path+SigSuffix, 1<<10)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: inventory %s is unsigned (no %s beside it) but a signature by %s is required; refusing it", ErrInvalid, path, path+SigSuffix, who)
	}
	if err != nil {
		return fmt.Errorf("%w: reading %s: %w", ErrInvalid, path+SigSuffix, err)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: %s is not a base64 Ed25519 signature", ErrInvalid, path+SigSuffix)
	}
	for _, k := range trust {
		if len(k.Key) == ed25519.PublicKeySize && ed25519.Verify(k.Key, data, sig) {
			return nil
		}
	}
	return fmt.Errorf("%w: inventory %s: signature does not verify with %s: it was changed after signing or signed by another key; refusing it", ErrInvalid, path, who)
}

func readLimited(path string, max int64) ([]byte, error) {
	data, err := smallfile.Read(path, max)
	if errors.Is(err, smallfile.ErrTooLarge) {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return data, err
}
