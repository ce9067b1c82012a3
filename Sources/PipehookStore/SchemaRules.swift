/// The one rule about schema versions, for every store: a binary never runs on a store that a
/// newer pipehook has migrated. Its code would read and write tables it does not know the meaning
/// of (a downgrade); refusing names the way back instead.
public enum SchemaRules {
    /// Throws when `applied` holds a migration this binary does not ship.
    public static func refuseNewer(applied: some Sequence<String>, known: [String], store: String) throws(StoreError) {
        let knownSet = Set(known)
        let unknown = applied.filter { !knownSet.contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw StoreError(
                .invalid,
                "\(store) was migrated by a newer pipehook (migration \(unknown.joined(separator: ", ")) is unknown to this version): "
                    + "run that version, or restore the backup taken before the upgrade"
            )
        }
    }
}
