#include <stdio.h>

int main(void) {
    printf("hello from a multi-stage build\n");
    return 0;
}
