/* cache-pingpong.c: how long one cache line takes to go from CPU 1 to CPU 0 and back, sampled every 1.5 s.
 * Packet-rate runs on this VM swing 2x because the host moves its two vCPUs between close and far cores;
 * this probe shows which placement a run had (about 120 ns close, about 470 ns far, on 2026-11-29). It does
 * not explain every slow run: runs bracketed by 101-135 ns probes also ran slow (docs/benchmarks.md).
 * Build and run: gcc -O2 -pthread -o /tmp/cache-pingpong bench/probes/cache-pingpong.c && /tmp/cache-pingpong 20
 * Written here because no packaged tool measures one line's round trip between two given CPUs. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdatomic.h>
#include <time.h>
#include <stdlib.h>
static _Alignas(64) _Atomic long flag;
static long N = 200000;
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);pthread_setaffinity_np(pthread_self(),sizeof s,&s);}
static void* other(void* a){pin(0);for(long i=0;i<N;i++){while(atomic_load_explicit(&flag,memory_order_acquire)!=2*i+1);atomic_store_explicit(&flag,2*i+2,memory_order_release);}return 0;}
int main(int argc,char**argv){int secs=argc>1?atoi(argv[1]):10;pin(1);
for(int s=0;s<secs;s++){flag=0;pthread_t t;pthread_create(&t,0,other,0);struct timespec a,b;clock_gettime(CLOCK_MONOTONIC,&a);
for(long i=0;i<N;i++){atomic_store_explicit(&flag,2*i+1,memory_order_release);while(atomic_load_explicit(&flag,memory_order_acquire)!=2*i+2);}
clock_gettime(CLOCK_MONOTONIC,&b);pthread_join(t,0);double ns=((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/N;printf("%.0f ",ns);fflush(stdout);
struct timespec z={0,500000000};nanosleep(&z,0);}
printf("\n");}
