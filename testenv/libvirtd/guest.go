package libvirtd

// GuestMessage is what the BootSector guest prints on its serial port.
const GuestMessage = "DEBVISOR-GUEST-OK"

// BootSector returns a 1 MiB raw disk image whose MBR boot code writes msg
// and CR LF to COM1 (I/O port 0x3f8) every half second, forever. It is the
// smallest real guest there is: the VM's firmware (SeaBIOS) loads it from
// the VM's disk and runs it, so seeing msg on the console proves that the
// disk, the firmware boot and the serial console all work, in well under a
// second and under KVM or TCG alike.
func BootSector(msg string) []byte {
	const org = 0x7c00
	code := []byte{
		0xFA,       // cli
		0x31, 0xC0, // xor ax, ax
		0x8E, 0xD8, // mov ds, ax
		0x8E, 0xD0, // mov ss, ax
		0xBC, 0x00, 0x7C, // mov sp, 0x7c00
		0xFB, // sti
		// top (offset 11):
		0xBE, 0x00, 0x00, // mov si, msg (patched below)
		0xBA, 0xF8, 0x03, // mov dx, 0x3f8
		// print (offset 17):
		0xAC,       // lodsb
		0x84, 0xC0, // test al, al
		0x74, 0x03, // jz wait (+3)
		0xEE,       // out dx, al
		0xEB, 0xF8, // jmp print (-8)
		// wait (offset 25): BIOS wait, CX:DX = 500000 µs
		0xB4, 0x86, // mov ah, 0x86
		0xB9, 0x07, 0x00, // mov cx, 0x0007
		0xBA, 0x20, 0xA1, // mov dx, 0xa120
		0xCD, 0x15, // int 0x15
		0xEB, 0xE6, // jmp top (-26)
	}
	if len(msg) > 400 {
		msg = msg[:400] // the MBR's code area is 446 bytes
	}
	addr := org + len(code)
	code[12], code[13] = byte(addr), byte(addr>>8)
	code = append(code, msg...)
	code = append(code, '\r', '\n', 0)
	img := make([]byte, 1<<20)
	copy(img, code)
	img[510], img[511] = 0x55, 0xAA
	return img
}
