//! Sets of byte addresses as sorted, disjoint half-open intervals: what a mechanism lets a
//! requester reach, and how much of it the policy did not grant.

/// Sorted, disjoint, non-adjacent `[start, end)` intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(u64, u64)>);

impl Intervals {
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Intervals {
        let mut sorted: Vec<(u64, u64)> = ranges.into_iter().filter(|(start, end)| start < end).collect();
        sorted.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
        for (start, end) in sorted {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Intervals(merged)
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|(start, end)| end - start).sum()
    }

    /// Whether `[address, address + length)` lies inside one interval.
    pub fn contains_span(&self, address: u64, length: u64) -> bool {
        let Some(end) = address.checked_add(length) else { return false };
        let index = self.0.partition_point(|(_, interval_end)| *interval_end <= address);
        self.0.get(index).is_some_and(|(start, interval_end)| *start <= address && end <= *interval_end)
    }

    /// Bytes of `self` outside `other`.
    pub fn bytes_outside(&self, other: &Intervals) -> u64 {
        let inside: u64 = self.0.iter().map(|&(start, end)| other.overlap(start, end)).sum();
        self.bytes() - inside
    }

    fn overlap(&self, start: u64, end: u64) -> u64 {
        let first = self.0.partition_point(|(_, interval_end)| *interval_end <= start);
        self.0[first..]
            .iter()
            .take_while(|(interval_start, _)| *interval_start < end)
            .map(|(interval_start, interval_end)| end.min(*interval_end) - start.max(*interval_start))
            .sum()
    }

    /// Bytes in both.
    pub fn intersection(&self, other: &Intervals) -> Intervals {
        let mut both = Vec::new();
        for &(start, end) in &self.0 {
            let first = other.0.partition_point(|(_, other_end)| *other_end <= start);
            for &(other_start, other_end) in other.0[first..].iter().take_while(|(other_start, _)| *other_start < end) {
                both.push((start.max(other_start), end.min(other_end)));
            }
        }
        Intervals::from_ranges(both)
    }

    /// Every interval widened outward to multiples of `unit`, merged.
    pub fn rounded_out(&self, unit: u64) -> Intervals {
        Intervals::from_ranges(self.0.iter().map(|(start, end)| (start / unit * unit, end.next_multiple_of(unit))))
    }

    /// Merges the two intervals with the smallest gap until at most `max` remain: the least
    /// over-exposure one more table entry could have avoided.
    pub fn coarsened_to(&self, max: usize) -> Intervals {
        let mut merged = self.0.clone();
        while merged.len() > max.max(1) {
            let gap_index = (1..merged.len()).min_by_key(|&index| merged[index].0 - merged[index - 1].1).unwrap_or(1);
            merged[gap_index - 1].1 = merged[gap_index].1;
            merged.remove(gap_index);
        }
        Intervals(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_counts_and_measures() {
        let set = Intervals::from_ranges([(10, 20), (0, 5), (18, 30), (40, 50)]);
        assert_eq!(set.ranges(), [(0, 5), (10, 30), (40, 50)]);
        assert!(set.contains_span(12, 18) && !set.contains_span(25, 10));
        assert_eq!(set.bytes_outside(&Intervals::from_ranges([(0, 12), (45, 100)])), 18 + 5);
        assert_eq!(set.coarsened_to(2).ranges(), [(0, 30), (40, 50)]);
        assert_eq!(set.rounded_out(16).ranges(), [(0, 64)]);
        assert_eq!(set.intersection(&Intervals::from_ranges([(3, 12), (29, 45)])).ranges(), [(3, 5), (10, 12), (29, 30), (40, 45)]);
    }
}
