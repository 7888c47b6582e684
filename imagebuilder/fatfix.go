package imagebuilder

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// go-diskfs v1.9.4 writes two things into a FAT32 filesystem that
// fsck.vfat rejects (GRUB and OVMF read it anyway):
//
//   - the ".." entry of a directory directly under the root points at the
//     root directory's cluster, where the FAT specification wants cluster 0;
//   - the FSInfo sector keeps "free cluster count unknown" (0xFFFFFFFF)
//     after files were written.
//
// fixFAT32 repairs both in place on the filesystem that starts at byte off
// of disk, so that independent tools accept the ESP. It changes nothing else
// and is deterministic, so reproducible builds stay bit-identical.
func fixFAT32(disk diskIO, off int64) error {
	bs := make([]byte, 512)
	if _, err := disk.ReadAt(bs, off); err != nil {
		return fmt.Errorf("read FAT32 boot sector: %w", err)
	}
	g, err := parseFAT32Geometry(bs)
	if err != nil {
		return err
	}
	fat := make([]byte, int64(g.fatSectors)*int64(g.sectorSize))
	if _, err := disk.ReadAt(fat, off+int64(g.reserved)*int64(g.sectorSize)); err != nil {
		return fmt.Errorf("read FAT: %w", err)
	}
	next := func(c uint32) uint32 { return binary.LittleEndian.Uint32(fat[4*c:]) & 0x0FFFFFFF }

	// Walk the root directory's cluster chain for subdirectory entries.
	clusterBytes := int64(g.sectorsPerCluster) * int64(g.sectorSize)
	clusterOff := func(c uint32) int64 {
		return off + (int64(g.reserved)+int64(g.fats)*int64(g.fatSectors))*int64(g.sectorSize) + int64(c-2)*clusterBytes
	}
	buf := make([]byte, clusterBytes)
	seen := map[uint32]bool{}
	for c := g.rootCluster; c >= 2 && c < g.clusters+2 && !seen[c]; c = next(c) {
		seen[c] = true
		if _, err := disk.ReadAt(buf, clusterOff(c)); err != nil {
			return fmt.Errorf("read root directory: %w", err)
		}
		for e := 0; e+32 <= len(buf); e += 32 {
			ent := buf[e : e+32]
			if ent[0] == 0 {
				break // end of directory
			}
			attr := ent[11]
			if ent[0] == 0xE5 || attr == 0x0F || attr&0x10 == 0 || ent[0] == '.' {
				continue // deleted, long-name part, not a directory, or . / ..
			}
			sub := uint32(binary.LittleEndian.Uint16(ent[20:]))<<16 | uint32(binary.LittleEndian.Uint16(ent[26:]))
			if sub < 2 || sub >= g.clusters+2 {
				return fmt.Errorf("directory entry %q points at cluster %d outside the filesystem", string(ent[:11]), sub)
			}
			dotdot := make([]byte, 32)
			at := clusterOff(sub) + 32
			if _, err := disk.ReadAt(dotdot, at); err != nil {
				return fmt.Errorf("read %q: %w", string(ent[:11]), err)
			}
			if string(dotdot[:2]) != ".." {
				continue
			}
			parent := uint32(binary.LittleEndian.Uint16(dotdot[20:]))<<16 | uint32(binary.LittleEndian.Uint16(dotdot[26:]))
			if parent == 0 {
				continue
			}
			binary.LittleEndian.PutUint16(dotdot[20:], 0)
			binary.LittleEndian.PutUint16(dotdot[26:], 0)
			if _, err := disk.WriteAt(dotdot, at); err != nil {
				return fmt.Errorf("write %q: %w", string(ent[:11]), err)
			}
		}
	}

	// FSInfo: count the free clusters and name the first one.
	var free, first uint32 = 0, 0xFFFFFFFF
	for c := uint32(2); c < g.clusters+2; c++ {
		if next(c) == 0 {
			free++
			if first == 0xFFFFFFFF {
				first = c
			}
		}
	}
	info := make([]byte, 512)
	infoOff := off + int64(g.fsInfoSector)*int64(g.sectorSize)
	if _, err := disk.ReadAt(info, infoOff); err != nil {
		return fmt.Errorf("read FSInfo: %w", err)
	}
	if string(info[0:4]) != "RRaA" || string(info[484:488]) != "rrAa" {
		return errors.New("FSInfo sector has no valid signature")
	}
	binary.LittleEndian.PutUint32(info[488:], free)
	binary.LittleEndian.PutUint32(info[492:], first)
	if _, err := disk.WriteAt(info, infoOff); err != nil {
		return fmt.Errorf("write FSInfo: %w", err)
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
