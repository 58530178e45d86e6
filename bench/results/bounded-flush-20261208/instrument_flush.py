import sys
p = sys.argv[1] + '/src/pipeline/shard.c'
s = open(p).read()
s = s.replace("""    agg_flush(self->agg, mode, self->barrier.wall_ns);
""", """    int64_t t0_ = fp_now_ns();
    agg_flush(self->agg, mode, self->barrier.wall_ns);
    { static int64_t mx_, sum_, n_, over1_, over2_; int64_t d_ = fp_now_ns() - t0_;
      n_++; sum_ += d_; if (d_ > mx_) mx_ = d_; if (d_ > 500000) over1_++; if (d_ > 2000000) over2_++;
      if (b->flags & FP_BARRIER_DRAIN) fprintf(stderr, "FLUSH n=%lld mean=%.3f max=%.3f >0.5ms=%lld >2ms=%lld\\n", (long long)n_, sum_/1e6/n_, mx_/1e6, (long long)over1_, (long long)over2_); }
""", 1)
open(p, 'w').write(s)
