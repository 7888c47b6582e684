package esp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// go-diskfs v1.9.4 writes two things into a FAT32 filesystem that
// fsck.vfat rejects (GRUB and OVMF read it anyway):
//
//   - the ".." entry of a directory directly under the root points at the
//     root directory's cluster, where the FAT specification wants cluster 0;
//   - the FSInfo sector keeps "free cluster count unknown" (0xFFFFFFFF)
//     after files were written.
//
// Repair fixes both in place on the filesystem that starts at byte off of
// dev, so that independent tools accept the ESP. It changes nothing else,
// is idempotent and deterministic (reproducible builds stay bit-identical),
// and is harmless on a FAT32 made by any other tool.
func Repair(dev Device, off int64) error {
	v, err := openVolume(dev, off)
	if err != nil {
		return err
	}
	// The subdirectories of the root: their ".." must say cluster 0.
	err = v.eachEntry(v.g.rootCluster, func(ent []byte) (bool, error) {
		attr := ent[11]
		if attr == attrLongName || attr&attrDir == 0 || ent[0] == '.' {
			return false, nil // long-name part, not a directory, or . / ..
		}
		sub := entryCluster(ent)
		if sub < 2 || sub >= v.g.clusters+2 {
			return false, fmt.Errorf("directory entry %q points at cluster %d outside the filesystem", string(ent[:11]), sub)
		}
		dotdot := make([]byte, dirEntrySize)
		at := v.clusterOff(sub) + dirEntrySize
		if _, err := dev.ReadAt(dotdot, at); err != nil {
			return false, fmt.Errorf("read %q: %w", string(ent[:11]), err)
		}
		if string(dotdot[:2]) != ".." || entryCluster(dotdot) == 0 {
			return false, nil
		}
		binary.LittleEndian.PutUint16(dotdot[20:], 0)
		binary.LittleEndian.PutUint16(dotdot[26:], 0)
		if _, err := dev.WriteAt(dotdot, at); err != nil {
			return false, fmt.Errorf("write %q: %w", string(ent[:11]), err)
		}
		return false, nil
	})
	if err != nil {
		return err
	}

	// FSInfo: count the free clusters and name the first one.
	var free, first uint32 = 0, 0xFFFFFFFF
	for c := uint32(2); c < v.g.clusters+2; c++ {
		if v.next(c) == 0 {
			free++
			if first == 0xFFFFFFFF {
				first = c
			}
		}
	}
	info := make([]byte, 512)
	infoOff := off + int64(v.g.fsInfoSector)*int64(v.g.sectorSize)
	if _, err := dev.ReadAt(info, infoOff); err != nil {
		return fmt.Errorf("read FSInfo: %w", err)
	}
	if string(info[0:4]) != "RRaA" || string(info[484:488]) != "rrAa" {
		return errors.New("FSInfo sector has no valid signature")
	}
	binary.LittleEndian.PutUint32(info[488:], free)
	binary.LittleEndian.PutUint32(info[492:], first)
	if _, err := dev.WriteAt(info, infoOff); err != nil {
		return fmt.Errorf("write FSInfo: %w", err)
	}
	return nil
}

// StampTimes sets the creation, modification and access times of every
// directory entry (files, directories, their "." and "..", the volume
// label) of the FAT32 filesystem at byte off of dev to t. go-diskfs stamps
// entries with the wall clock, or with SOURCE_DATE_EPOCH when the process
// environment has it; stamping afterwards makes the bytes a function of
// the build's epoch without touching the environment. FAT keeps local
// time with two-second resolution from 1980 to 2107; t is taken in UTC
// and clamped to that range.
func StampTimes(dev Device, off int64, t time.Time) error {
	v, err := openVolume(dev, off)
	if err != nil {
		return err
	}
	date, clock := fatDateTime(t)
	seen := map[uint32]bool{}
	var walk func(dir uint32) error
	walk = func(dir uint32) error {
		var subdirs []uint32
		err := v.eachEntry(dir, func(ent []byte) (bool, error) {
			if ent[11] == attrLongName {
				return false, nil
			}
			ent[13] = 0 // creation time, tenths of a second
			binary.LittleEndian.PutUint16(ent[14:], clock)
			binary.LittleEndian.PutUint16(ent[16:], date)
			binary.LittleEndian.PutUint16(ent[18:], date) // last access: a date only
			binary.LittleEndian.PutUint16(ent[22:], clock)
			binary.LittleEndian.PutUint16(ent[24:], date)
			if ent[11]&attrDir != 0 && ent[0] != '.' {
				subdirs = append(subdirs, entryCluster(ent))
			}
			return true, nil
		})
		if err != nil {
			return err
		}
		for _, c := range subdirs {
			if c < 2 || c >= v.g.clusters+2 {
				return fmt.Errorf("directory at cluster %d is outside the filesystem", c)
			}
			if seen[c] {
				continue
			}
			seen[c] = true
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	seen[v.g.rootCluster] = true
	return walk(v.g.rootCluster)
}

// Finish is what a writer calls after its last go-diskfs write to an ESP
// it made: Repair, then StampTimes with the build's time.
func Finish(dev Device, off int64, t time.Time) error {
	if err := Repair(dev, off); err != nil {
		return fmt.Errorf("repair FAT32: %w", err)
	}
	if err := StampTimes(dev, off, t); err != nil {
		return fmt.Errorf("stamp FAT32 times: %w", err)
	}
	return nil
}

// fatDateTime converts t (in UTC) to FAT's date and time fields.
func fatDateTime(t time.Time) (date, clock uint16) {
	t = t.UTC()
	switch {
	case t.Year() < 1980:
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	case t.Year() > 2107:
		t = time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)
	}
	date = uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	clock = uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	return date, clock
}

const (
	dirEntrySize = 32
	attrDir      = 0x10
	attrLongName = 0x0F
)

func entryCluster(ent []byte) uint32 {
	return uint32(binary.LittleEndian.Uint16(ent[20:]))<<16 | uint32(binary.LittleEndian.Uint16(ent[26:]))
}

// volume is a FAT32 filesystem read at the byte level: its geometry and
// its first FAT.
type volume struct {
	dev Device
	off int64
	g   fat32Geometry
	fat []byte
}

func openVolume(dev Device, off int64) (*volume, error) {
	bs := make([]byte, 512)
	if _, err := dev.ReadAt(bs, off); err != nil {
		return nil, fmt.Errorf("read FAT32 boot sector: %w", err)
	}
	g, err := parseFAT32Geometry(bs)
	if err != nil {
		return nil, err
	}
	fat := make([]byte, int64(g.fatSectors)*int64(g.sectorSize))
	if _, err := dev.ReadAt(fat, off+int64(g.reserved)*int64(g.sectorSize)); err != nil {
		return nil, fmt.Errorf("read FAT: %w", err)
	}
	return &volume{dev: dev, off: off, g: g, fat: fat}, nil
}

func (v *volume) next(c uint32) uint32 {
	return binary.LittleEndian.Uint32(v.fat[4*c:]) & 0x0FFFFFFF
}

func (v *volume) clusterBytes() int64 {
	return int64(v.g.sectorsPerCluster) * int64(v.g.sectorSize)
}

func (v *volume) clusterOff(c uint32) int64 {
	return v.off + (int64(v.g.reserved)+int64(v.g.fats)*int64(v.g.fatSectors))*int64(v.g.sectorSize) + int64(c-2)*v.clusterBytes()
}

// eachEntry calls fn for every live entry (not free, not deleted) of the
// directory whose cluster chain starts at dir, stopping at the end marker.
// When fn reports a change, the cluster holding the entry is written back.
func (v *volume) eachEntry(dir uint32, fn func(ent []byte) (changed bool, err error)) error {
	buf := make([]byte, v.clusterBytes())
	seen := map[uint32]bool{}
	for c := dir; c >= 2 && c < v.g.clusters+2 && !seen[c]; c = v.next(c) {
		seen[c] = true
		if _, err := v.dev.ReadAt(buf, v.clusterOff(c)); err != nil {
			return fmt.Errorf("read directory cluster %d: %w", c, err)
		}
		changed, end := false, false
		for e := 0; e+dirEntrySize <= len(buf); e += dirEntrySize {
			ent := buf[e : e+dirEntrySize]
			if ent[0] == 0 {
				end = true
				break
			}
			if ent[0] == 0xE5 {
				continue
			}
			ch, err := fn(ent)
			if err != nil {
				return err
			}
			changed = changed || ch
		}
		if changed {
			if _, err := v.dev.WriteAt(buf, v.clusterOff(c)); err != nil {
				return fmt.Errorf("write directory cluster %d: %w", c, err)
			}
		}
		if end {
			return nil
		}
	}
	return nil
}

type fat32Geometry struct {
	sectorSize        uint16
	sectorsPerCluster uint8
	reserved          uint16
	fats              uint8
	fatSectors        uint32
	rootCluster       uint32
	fsInfoSector      uint16
	clusters          uint32 // data clusters, numbered from 2
}

func parseFAT32Geometry(bs []byte) (fat32Geometry, error) {
	if len(bs) < 512 || bs[510] != 0x55 || bs[511] != 0xAA {
		return fat32Geometry{}, errors.New("no FAT boot sector signature")
	}
	g := fat32Geometry{
		sectorSize:        binary.LittleEndian.Uint16(bs[11:]),
		sectorsPerCluster: bs[13],
		reserved:          binary.LittleEndian.Uint16(bs[14:]),
		fats:              bs[16],
		fatSectors:        binary.LittleEndian.Uint32(bs[36:]),
		rootCluster:       binary.LittleEndian.Uint32(bs[44:]),
		fsInfoSector:      binary.LittleEndian.Uint16(bs[48:]),
	}
	total := uint32(binary.LittleEndian.Uint16(bs[19:]))
	if total == 0 {
		total = binary.LittleEndian.Uint32(bs[32:])
	}
	if g.sectorSize == 0 || g.sectorsPerCluster == 0 || g.fats == 0 || g.fatSectors == 0 || binary.LittleEndian.Uint16(bs[22:]) != 0 {
		return fat32Geometry{}, errors.New("not a FAT32 boot sector")
	}
	meta := uint32(g.reserved) + uint32(g.fats)*g.fatSectors
	if total <= meta {
		return fat32Geometry{}, errors.New("FAT32 boot sector: no data area")
	}
	g.clusters = (total - meta) / uint32(g.sectorsPerCluster)
	// The FAT holds 4 bytes per cluster plus the two reserved entries; go-diskfs
	// sizes it short at some sizes (the spec refuses those), so never index past it.
	if maxClusters := g.fatSectors*uint32(g.sectorSize)/4 - 2; g.clusters > maxClusters {
		g.clusters = maxClusters
	}
	return g, nil
}
