//! Which continent Route 53 geolocation puts each country in.
//!
//! The table is the "Location" section of the Route 53 Developer Guide page
//! "Values specific for geolocation records"
//! (<https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/resource-record-sets-values-geo.html>),
//! transcribed from that page's published source (`awsdocs/amazon-route53-docs`,
//! `doc_source/resource-record-sets-values-geo.md`, last revision 2022-08-19).
//! Where Route 53 and common geography disagree, Route 53 wins.

/// The continent code (AF, AN, AS, EU, NA, OC, SA) Route 53 uses for an ISO 3166-1 alpha-2 country code (upper case), or None when the code is not one it knows.
pub fn continent_of(country: &str) -> Option<&'static str> {
    // Exact, case-sensitive match: Route 53 writes codes in upper case, and
    // guessing at other spellings would hide bad input from the caller.
    COUNTRIES
        .binary_search_by(|&(code, _)| code.cmp(country))
        .ok()
        .and_then(|i| COUNTRIES.get(i))
        .map(|&(_, continent)| continent)
}

// Sorted by country code so `continent_of` can binary search; the tests check
// the order. Copied continent by continent from the page, so some placements
// differ from UN M49 on purpose: TR and CY are EU, TL is OC, GS and TF are AN,
// IO and CC are AS. XK is here although ISO has not assigned it, because Route
// 53 lists it. BV, CX, EH and HM are left out because the page says Route 53
// has no IP data for them and refuses geolocation records there, so no query is
// ever placed in them and a lookup should fall through to the default record.
const COUNTRIES: [(&str, &str); 246] = [
    ("AD", "EU"),
    ("AE", "AS"),
    ("AF", "AS"),
    ("AG", "NA"),
    ("AI", "NA"),
    ("AL", "EU"),
    ("AM", "AS"),
    ("AO", "AF"),
    ("AQ", "AN"),
    ("AR", "SA"),
    ("AS", "OC"),
    ("AT", "EU"),
    ("AU", "OC"),
    ("AW", "NA"),
    ("AX", "EU"),
    ("AZ", "AS"),
    ("BA", "EU"),
    ("BB", "NA"),
    ("BD", "AS"),
    ("BE", "EU"),
    ("BF", "AF"),
    ("BG", "EU"),
    ("BH", "AS"),
    ("BI", "AF"),
    ("BJ", "AF"),
    ("BL", "NA"),
    ("BM", "NA"),
    ("BN", "AS"),
    ("BO", "SA"),
    ("BQ", "NA"),
    ("BR", "SA"),
    ("BS", "NA"),
    ("BT", "AS"),
    ("BW", "AF"),
    ("BY", "EU"),
    ("BZ", "NA"),
    ("CA", "NA"),
    ("CC", "AS"),
    ("CD", "AF"),
    ("CF", "AF"),
    ("CG", "AF"),
    ("CH", "EU"),
    ("CI", "AF"),
    ("CK", "OC"),
    ("CL", "SA"),
    ("CM", "AF"),
    ("CN", "AS"),
    ("CO", "SA"),
    ("CR", "NA"),
    ("CU", "NA"),
    ("CV", "AF"),
    ("CW", "NA"),
    ("CY", "EU"),
    ("CZ", "EU"),
    ("DE", "EU"),
    ("DJ", "AF"),
    ("DK", "EU"),
    ("DM", "NA"),
    ("DO", "NA"),
    ("DZ", "AF"),
    ("EC", "SA"),
    ("EE", "EU"),
    ("EG", "AF"),
    ("ER", "AF"),
    ("ES", "EU"),
    ("ET", "AF"),
    ("FI", "EU"),
    ("FJ", "OC"),
    ("FK", "SA"),
    ("FM", "OC"),
    ("FO", "EU"),
    ("FR", "EU"),
    ("GA", "AF"),
    ("GB", "EU"),
    ("GD", "NA"),
    ("GE", "AS"),
    ("GF", "SA"),
    ("GG", "EU"),
    ("GH", "AF"),
    ("GI", "EU"),
    ("GL", "NA"),
    ("GM", "AF"),
    ("GN", "AF"),
    ("GP", "NA"),
    ("GQ", "AF"),
    ("GR", "EU"),
    ("GS", "AN"),
    ("GT", "NA"),
    ("GU", "OC"),
    ("GW", "AF"),
    ("GY", "SA"),
    ("HK", "AS"),
    ("HN", "NA"),
    ("HR", "EU"),
    ("HT", "NA"),
    ("HU", "EU"),
    ("ID", "AS"),
    ("IE", "EU"),
    ("IL", "AS"),
    ("IM", "EU"),
    ("IN", "AS"),
    ("IO", "AS"),
    ("IQ", "AS"),
    ("IR", "AS"),
    ("IS", "EU"),
    ("IT", "EU"),
    ("JE", "EU"),
    ("JM", "NA"),
    ("JO", "AS"),
    ("JP", "AS"),
    ("KE", "AF"),
    ("KG", "AS"),
    ("KH", "AS"),
    ("KI", "OC"),
    ("KM", "AF"),
    ("KN", "NA"),
    ("KP", "AS"),
    ("KR", "AS"),
    ("KW", "AS"),
    ("KY", "NA"),
    ("KZ", "AS"),
    ("LA", "AS"),
    ("LB", "AS"),
    ("LC", "NA"),
    ("LI", "EU"),
    ("LK", "AS"),
    ("LR", "AF"),
    ("LS", "AF"),
    ("LT", "EU"),
    ("LU", "EU"),
    ("LV", "EU"),
    ("LY", "AF"),
    ("MA", "AF"),
    ("MC", "EU"),
    ("MD", "EU"),
    ("ME", "EU"),
    ("MF", "NA"),
    ("MG", "AF"),
    ("MH", "OC"),
    ("MK", "EU"),
    ("ML", "AF"),
    ("MM", "AS"),
    ("MN", "AS"),
    ("MO", "AS"),
    ("MP", "OC"),
    ("MQ", "NA"),
    ("MR", "AF"),
    ("MS", "NA"),
    ("MT", "EU"),
    ("MU", "AF"),
    ("MV", "AS"),
    ("MW", "AF"),
    ("MX", "NA"),
    ("MY", "AS"),
    ("MZ", "AF"),
    ("NA", "AF"),
    ("NC", "OC"),
    ("NE", "AF"),
    ("NF", "OC"),
    ("NG", "AF"),
    ("NI", "NA"),
    ("NL", "EU"),
    ("NO", "EU"),
    ("NP", "AS"),
    ("NR", "OC"),
    ("NU", "OC"),
    ("NZ", "OC"),
    ("OM", "AS"),
    ("PA", "NA"),
    ("PE", "SA"),
    ("PF", "OC"),
    ("PG", "OC"),
    ("PH", "AS"),
    ("PK", "AS"),
    ("PL", "EU"),
    ("PM", "NA"),
    ("PN", "OC"),
    ("PR", "NA"),
    ("PS", "AS"),
    ("PT", "EU"),
    ("PW", "OC"),
    ("PY", "SA"),
    ("QA", "AS"),
    ("RE", "AF"),
    ("RO", "EU"),
    ("RS", "EU"),
    ("RU", "EU"),
    ("RW", "AF"),
    ("SA", "AS"),
    ("SB", "OC"),
    ("SC", "AF"),
    ("SD", "AF"),
    ("SE", "EU"),
    ("SG", "AS"),
    ("SH", "AF"),
    ("SI", "EU"),
    ("SJ", "EU"),
    ("SK", "EU"),
    ("SL", "AF"),
    ("SM", "EU"),
    ("SN", "AF"),
    ("SO", "AF"),
    ("SR", "SA"),
    ("SS", "AF"),
    ("ST", "AF"),
    ("SV", "NA"),
    ("SX", "NA"),
    ("SY", "AS"),
    ("SZ", "AF"),
    ("TC", "NA"),
    ("TD", "AF"),
    ("TF", "AN"),
    ("TG", "AF"),
    ("TH", "AS"),
    ("TJ", "AS"),
    ("TK", "OC"),
    ("TL", "OC"),
    ("TM", "AS"),
    ("TN", "AF"),
    ("TO", "OC"),
    ("TR", "EU"),
    ("TT", "NA"),
    ("TV", "OC"),
    ("TW", "AS"),
    ("TZ", "AF"),
    ("UA", "EU"),
    ("UG", "AF"),
    ("UM", "OC"),
    ("US", "NA"),
    ("UY", "SA"),
    ("UZ", "AS"),
    ("VA", "EU"),
    ("VC", "NA"),
    ("VE", "SA"),
    ("VG", "NA"),
    ("VI", "NA"),
    ("VN", "AS"),
    ("VU", "OC"),
    ("WF", "OC"),
    ("WS", "OC"),
    ("XK", "EU"),
    ("YE", "AS"),
    ("YT", "AF"),
    ("ZA", "AF"),
    ("ZM", "AF"),
    ("ZW", "AF"),
];

#[cfg(test)]
mod tests {
    use super::*;

    const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

    // Every officially assigned ISO 3166-1 alpha-2 code.
    const ISO_3166_1: &str = "\
         AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE \
         BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD \
         CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM \
         DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF \
         GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU \
         ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN \
         KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME \
         MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA \
         NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM \
         PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI \
         SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK \
         TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI \
         VN VU WF WS YE YT ZA ZM ZW";

    // The ISO codes Route 53 refuses geolocation records for.
    const UNSUPPORTED: [&str; 4] = ["BV", "CX", "EH", "HM"];

    #[test]
    fn table_is_sorted_without_duplicates() {
        for pair in COUNTRIES.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "{} must sort strictly before {}",
                pair[0].0,
                pair[1].0
            );
        }
    }

    #[test]
    fn every_value_is_a_route53_continent() {
        for (country, continent) in COUNTRIES {
            assert!(
                CONTINENTS.contains(&continent),
                "{country} maps to {continent}"
            );
        }
    }

    #[test]
    fn every_key_is_two_upper_case_letters() {
        for (country, _) in COUNTRIES {
            assert!(
                country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()),
                "{country:?}"
            );
        }
    }

    // Guards the transcription: these are the sizes of the page's lists.
    #[test]
    fn continent_sizes_match_the_page() {
        let expected = [
            ("AF", 57),
            ("AN", 3),
            ("AS", 50),
            ("EU", 54),
            ("NA", 41),
            ("OC", 27),
            ("SA", 14),
        ];
        for (continent, size) in expected {
            let got = COUNTRIES.iter().filter(|&&(_, c)| c == continent).count();
            assert_eq!(got, size, "{continent}");
        }
    }

    #[test]
    fn covers_iso_3166_1_except_the_unsupported() {
        let iso: Vec<&str> = ISO_3166_1.split_whitespace().collect();
        assert_eq!(iso.len(), 249);
        for code in iso {
            if UNSUPPORTED.contains(&code) {
                assert_eq!(continent_of(code), None, "{code}");
            } else {
                assert!(continent_of(code).is_some(), "{code} is missing");
            }
        }
        // 245 ISO codes plus XK.
        assert_eq!(COUNTRIES.len(), 246);
    }

    #[test]
    fn spot_checks() {
        assert_eq!(continent_of("US"), Some("NA"));
        assert_eq!(continent_of("DE"), Some("EU"));
        assert_eq!(continent_of("JP"), Some("AS"));
        assert_eq!(continent_of("BR"), Some("SA"));
        assert_eq!(continent_of("AU"), Some("OC"));
        assert_eq!(continent_of("ZA"), Some("AF"));
        assert_eq!(continent_of("AQ"), Some("AN"));
    }

    // Placements that are easy to get wrong from memory, as the page has them.
    #[test]
    fn route53_placements() {
        let cases = [
            ("TR", "EU"),
            ("CY", "EU"),
            ("RU", "EU"),
            ("XK", "EU"),
            ("AM", "AS"),
            ("AZ", "AS"),
            ("GE", "AS"),
            ("KZ", "AS"),
            ("IO", "AS"),
            ("CC", "AS"),
            ("EG", "AF"),
            ("PA", "NA"),
            ("GL", "NA"),
            ("CW", "NA"),
            ("TT", "NA"),
            ("PR", "NA"),
            ("TL", "OC"),
            ("UM", "OC"),
            ("GS", "AN"),
            ("TF", "AN"),
            ("GF", "SA"),
            ("FK", "SA"),
        ];
        for (country, continent) in cases {
            assert_eq!(continent_of(country), Some(continent), "{country}");
        }
    }

    #[test]
    fn lower_case_or_unknown_is_none() {
        for input in ["us", "De", "zz", "ZZ", "", "U", "USA", "*", "EU"] {
            assert_eq!(continent_of(input), None, "{input:?}");
        }
    }
}
