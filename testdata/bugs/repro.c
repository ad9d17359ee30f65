// Reproducer for kgym's injected test bug (testdata/bugs/bug.patch):
// prctl(PR_KGYM_NOTE, KGYM_NOTE_REJECTED) frees the note it then reads,
// a slab use-after-free that KASAN reports as
// "KASAN: use-after-free Read in kgym_note_store".
//
// Build: gcc -O2 -pthread -static -o repro repro.c
#include <stdio.h>
#include <sys/prctl.h>

#define PR_KGYM_NOTE 0x6b67796d /* "kgym" */
#define KGYM_NOTE_REJECTED 0xdead

int main(void)
{
	/* A valid note first: the path that must keep working after the fix. */
	long ok = prctl(PR_KGYM_NOTE, 0x1234, 0, 0, 0);
	printf("kgym-repro: valid note: %ld\n", ok);
	fflush(stdout);
	/* The rejected note: a use-after-free in the buggy kernel. */
	long bad = prctl(PR_KGYM_NOTE, KGYM_NOTE_REJECTED, 0, 0, 0);
	printf("kgym-repro: rejected note: %ld\n", bad);
	return 0;
}
